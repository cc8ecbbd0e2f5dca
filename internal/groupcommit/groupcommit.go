// Package groupcommit shares one expensive commit (a write and an fsync)
// among the callers that arrive while the previous commit runs: the audit
// log's lines and the bbolt store's transactions use it.
//
// The first caller to find no commit in progress commits at once, with no
// timer (unlike bbolt's DB.Batch), its own item and every item queued
// meanwhile; the first of the callers that queue during that commit leads
// the next one. So no caller commits for others for longer than one commit,
// and the cost of the system calls is shared when requests come together.
package groupcommit

import "sync"

// Queue gathers concurrent calls of Do into groups. The zero value is
// ready to use; a Queue must not be copied after first use.
type Queue[T any] struct {
	mu    sync.Mutex // guards queue and busy
	queue []*waiter[T]
	busy  bool // a group is being committed; its leader hands over
}

type waiter[T any] struct {
	v    T
	lead chan bool // true: lead the next group; false: committed by another
}

// Do queues v and returns once a group holding it has been committed.
// commit gets the group's items in the order they queued and must record
// each one's result in the item itself (T is a pointer to a struct with an
// err field, say); Do's return is the point after which the caller reads
// it. commit runs for one group at a time.
func (q *Queue[T]) Do(v T, commit func(group []T)) {
	w := &waiter[T]{v: v, lead: make(chan bool, 1)}
	q.mu.Lock()
	q.queue = append(q.queue, w)
	if q.busy {
		q.mu.Unlock()
		if !<-w.lead {
			return
		}
		q.mu.Lock()
	}
	q.busy = true
	group := q.queue
	q.queue = nil
	q.mu.Unlock()

	items := make([]T, len(group))
	for i, g := range group {
		items[i] = g.v
	}
	commit(items)

	q.mu.Lock()
	if len(q.queue) > 0 {
		q.queue[0].lead <- true // it leads the next group
	} else {
		q.busy = false
	}
	q.mu.Unlock()
	for _, g := range group {
		if g != w {
			g.lead <- false
		}
	}
}
