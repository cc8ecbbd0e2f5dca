package main

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The background jobs (internal/leader) seen from outside: every replica
// writes an audit line when it takes the lead ("leader/acquire"), loses it
// ("leader/lose"), gives it up ("leader/resign"), and after each job run
// ("job/<name>"), naming itself (identity kind "replica").

// jobLine is one audit line of the job runner.
type jobLine struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Method   string    `json:"method"`
	Code     string    `json:"code"`
	Identity *struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
	} `json:"identity"`
}

// jobLines reads r's audit log and returns its job runner lines.
func jobLines(t *testing.T, r *replica) []jobLine {
	t.Helper()
	f, err := os.Open(r.Audit)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatalf("audit log of %s: %v", r.Name, err)
	}
	defer f.Close()
	var out []jobLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l jobLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Type != "job" {
			continue // a request line, or a line cut by SIGKILL
		}
		if l.Identity == nil || l.Identity.Kind != "replica" || l.Identity.Name != r.Name {
			t.Errorf("audit log of %s: job line %s names %+v, want replica %s", r.Name, l.Method, l.Identity, r.Name)
		}
		out = append(out, l)
	}
	return out
}

// leads reports whether the last leadership line of lines is an acquire,
// and when it was written.
func leads(lines []jobLine) (bool, time.Time) {
	for i := len(lines) - 1; i >= 0; i-- {
		switch lines[i].Method {
		case "leader/acquire":
			return true, lines[i].Time
		case "leader/lose", "leader/resign":
			return false, lines[i].Time
		}
	}
	return false, time.Time{}
}

// jobLeader waits until exactly one live replica says it leads (its last
// leadership line is an acquire) and returns its index and when it took
// the lead; the others must not lead meanwhile.
func jobLeader(t *testing.T, rs *replicaSet, after time.Time, guard time.Duration) (int, time.Time) {
	t.Helper()
	until := time.Now().Add(guard)
	for {
		var leaders []int
		var since time.Time
		for i, r := range rs.Replicas {
			if r.stopped {
				continue
			}
			if ok, at := leads(jobLines(t, r)); ok && at.After(after) {
				leaders = append(leaders, i)
				since = at
			}
		}
		if len(leaders) == 1 {
			return leaders[0], since
		}
		if time.Now().After(until) {
			t.Fatalf("background jobs: replicas %v lead after %s, want exactly one", leaders, guard)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jobNames returns the names of the jobs in lines ("job/<name>" -> name)
// that ran at or after from, sorted.
func jobNames(lines []jobLine, from time.Time) []string {
	var out []string
	for _, l := range lines {
		if n, ok := strings.CutPrefix(l.Method, "job/"); ok && !l.Time.Before(from) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// leaderKilled is what killJobLeader saw.
type leaderKilled struct {
	killed, next string
	handover     time.Duration // SIGKILL to the next leader's acquire line
	resumed      time.Duration // SIGKILL to the last of the jobs' first runs on next
	jobs         []string
}

// killJobLeader finds the replica that leads the background jobs, kills it
// (SIGKILL: its lease is left to expire), and checks that another replica
// takes the lead and runs every job the killed one ran. The killed replica
// is left stopped.
func killJobLeader(t *testing.T, rs *replicaSet) leaderKilled {
	t.Helper()
	guard := 2*rs.ElectionTTL + time.Minute // a hang guard, not a timed assertion
	li, _ := jobLeader(t, rs, time.Time{}, guard)
	old := rs.Replicas[li]
	ran := jobNames(jobLines(t, old), time.Time{})
	if len(ran) == 0 {
		t.Fatalf("leader %s wrote no job audit line: the jobs do not run", old.Name)
	}
	killAt := time.Now()
	rs.Kill(t, old)
	ni, acquired := jobLeader(t, rs, killAt, guard)
	next := rs.Replicas[ni]
	// Every job runs at once when a term starts: wait for each on next.
	until := time.Now().Add(guard)
	var got []string
	var last time.Time
	for {
		lines := jobLines(t, next)
		got = jobNames(lines, acquired)
		if !slices.ContainsFunc(ran, func(n string) bool { return !slices.Contains(got, n) }) {
			for _, n := range ran {
				for _, l := range lines {
					if l.Method == "job/"+n && !l.Time.Before(acquired) {
						last = maxTime(last, l.Time)
						break
					}
				}
			}
			break
		}
		if time.Now().After(until) {
			t.Fatalf("after %s was killed, %s leads but ran jobs %v, want %v", old.Name, next.Name, got, ran)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One leader: no other live replica leads now.
	for i, r := range rs.Replicas {
		if i == ni || r.stopped {
			continue
		}
		if ok, at := leads(jobLines(t, r)); ok {
			t.Errorf("%s and %s both lead the background jobs (%s since %s)", next.Name, r.Name, r.Name, at.Format(time.RFC3339Nano))
		}
	}
	return leaderKilled{killed: old.Name, next: next.Name, handover: acquired.Sub(killAt), resumed: last.Sub(killAt), jobs: ran}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// checkLogsNameReplica: every line the replicas logged (slog's text lines,
// "time=..."), names its replica (replica=<id>), whichever part of the
// server wrote it.
func checkLogsNameReplica(t *testing.T, rs *replicaSet) {
	t.Helper()
	for _, r := range rs.Replicas {
		var bad []string
		n := 0
		for _, l := range strings.Split(r.logs.String(), "\n") {
			if !strings.HasPrefix(l, "time=") {
				continue
			}
			n++
			if !strings.Contains(l, " replica="+r.Name+" ") && !strings.HasSuffix(l, " replica="+r.Name) {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			t.Errorf("replica %s: %d of %d log lines do not name it, e.g.:\n%s", r.Name, len(bad), n, strings.Join(bad[:min(len(bad), 5)], "\n"))
		}
	}
}
