package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Problem kinds reported by Verify.
const (
	Changed   = "changed"   // the line's bytes differ from what the next line chained to
	Missing   = "missing"   // lines are missing before this one
	Inserted  = "inserted"  // the line was not in the chain
	Reordered = "reordered" // this line and the next are out of order
	Malformed = "malformed" // not a JSON audit line
)

// ChainError reports the first line where the chain breaks.
type ChainError struct {
	File    string // as given to Verifier.Verify ("" for Verify)
	Line    int    // 1-based line number in File
	Problem string // Changed, Missing, Inserted, Reordered or Malformed
	Detail  string
}

func (e *ChainError) Error() string {
	where := fmt.Sprintf("line %d", e.Line)
	if e.File != "" {
		where = e.File + ": " + where
	}
	return fmt.Sprintf("audit: %s: %s: %s", where, e.Problem, e.Detail)
}

// Verifier checks a chain that may span several files given in order.
type Verifier struct {
	started bool
	seq     uint64
	hash    string
	prev    string // prev field of the last line
	file    string
	line    int
	total   int
}

type record struct {
	Seq  uint64 `json:"seq"`
	Prev string `json:"prev"`
	raw  []byte
	hash string
	line int
}

// Verify checks one whole log read from r (a file verified alone may start
// mid-chain, after a rotation) and returns the number of lines checked.
func Verify(r io.Reader) (int, error) { return new(Verifier).Verify("", r) }

// LastHash returns the sequence number and hash of the last line verified.
func (v *Verifier) LastHash() (uint64, string) { return v.seq, v.hash }

// Verify checks the next file of the chain and returns the number of lines it
// checked in this file. On the first broken link it returns a *ChainError.
func (v *Verifier) Verify(name string, r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	next := func() (*record, error) {
		raw, err := br.ReadBytes('\n')
		if len(raw) == 0 && errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		n++
		rec := &record{raw: bytes.TrimSuffix(raw, []byte("\n")), line: n}
		if len(rec.raw) == 0 || json.Unmarshal(rec.raw, rec) != nil || rec.Seq == 0 {
			return nil, &ChainError{File: name, Line: n, Problem: Malformed, Detail: "not a JSON audit line with a seq"}
		}
		if !bytes.HasSuffix(raw, []byte("\n")) {
			return nil, &ChainError{File: name, Line: n, Problem: Malformed, Detail: "torn line (no newline)"}
		}
		rec.hash = hashLine(rec.raw)
		return rec, nil
	}
	checked := 0
	cur, err := next()
	if err != nil {
		return 0, err
	}
	for cur != nil {
		peek, perr := next()
		if err := v.link(name, cur, peek); err != nil {
			return checked, err
		}
		if perr != nil {
			return checked + 1, perr
		}
		v.started, v.seq, v.hash, v.prev, v.file, v.line = true, cur.Seq, cur.hash, cur.Prev, name, cur.line
		checked++
		v.total++
		cur = peek
	}
	return checked, nil
}

// link checks that cur follows the last verified line; peek (may be nil) is
// the line after cur, used to tell a reordered pair from missing lines.
func (v *Verifier) link(name string, cur, peek *record) error {
	at := func(p, d string) error { return &ChainError{File: name, Line: cur.line, Problem: p, Detail: d} }
	if !v.started {
		if cur.Seq == 1 && cur.Prev != "" {
			return at(Changed, "the first line of a chain must have an empty prev")
		}
		return nil // a file verified alone may start mid-chain
	}
	want := v.seq + 1
	switch {
	case cur.Seq == want && cur.Prev == v.hash:
		return nil
	case cur.Seq == want:
		return &ChainError{File: v.file, Line: v.line, Problem: Changed,
			Detail: fmt.Sprintf("its hash is not the prev of the next line (seq %d)", cur.Seq)}
	case cur.Seq > want && peek != nil && peek.Seq == want:
		return at(Reordered, fmt.Sprintf("seq %d comes before seq %d", cur.Seq, peek.Seq))
	case cur.Seq > want:
		return at(Missing, fmt.Sprintf("%d line(s) missing before it (seq %d follows seq %d)", cur.Seq-want, cur.Seq, v.seq))
	case cur.Seq == v.seq && cur.Prev == v.prev:
		// Two lines claim the same place; the earlier one was put there.
		return &ChainError{File: v.file, Line: v.line, Problem: Inserted,
			Detail: fmt.Sprintf("seq %d appears twice and the next line chains past it", cur.Seq)}
	case peek != nil && peek.Seq == want:
		return at(Inserted, fmt.Sprintf("seq %d does not belong between seq %d and seq %d", cur.Seq, v.seq, peek.Seq))
	default:
		return at(Reordered, fmt.Sprintf("seq %d follows seq %d", cur.Seq, v.seq))
	}
}
