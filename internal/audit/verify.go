package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// Problem kinds reported by Verify.
const (
	Changed   = "changed"   // the line fails its MAC: edited, forged, re-chained or of another key
	Missing   = "missing"   // lines are missing before this one (or a file's first lines, or a file)
	Inserted  = "inserted"  // the line was not in the chain at this place
	Reordered = "reordered" // this line and the next are out of order
	Malformed = "malformed" // not a sealed JSON audit line
	Foreign   = "foreign"   // the file belongs to another chain
	Unlinked  = "unlinked"  // the header names another previous file than the one given before it
	Truncated = "truncated" // the chain ends before the expected head (tail cut, last lines or files deleted)
	Mismatch  = "mismatch"  // the line at the expected head's seq is not the expected one
)

// ChainError reports the first line where the chain breaks.
type ChainError struct {
	File    string // as given to Verifier.Verify ("" for Verify)
	Line    int    // 1-based line number in File (0: the chain as a whole)
	Problem string // one of the kinds above
	Detail  string
}

func (e *ChainError) Error() string {
	where := fmt.Sprintf("line %d", e.Line)
	if e.File != "" {
		where = e.File + ": " + where
	}
	return fmt.Sprintf("audit: %s: %s: %s", where, e.Problem, e.Detail)
}

// Verifier checks a chain that may span several files, given oldest first.
// Each file must begin with its header; the first file given may begin
// mid-chain (older files deleted by retention), the others must each link to
// the file before. Finish reports what a single line cannot show: a torn
// last line, and a chain that does not reach the expected head.
type Verifier struct {
	key     []byte // chain key; nil: links only
	started bool
	seq     uint64
	hash    string
	prev    string // prev of the last line
	chainID string
	file    string
	line    int
	files   int
	total   int
	first   uint64 // seq of the first line verified
	torn    int    // length of a torn last line in the previous file, if any
	tornAt  int

	expect     bool
	expectSeq  uint64
	expectHash string
	seen       bool
	after      int
}

// Result sums up a verified chain.
type Result struct {
	Lines     int
	Files     int
	FirstSeq  uint64 // 1 when the chain starts at its beginning
	LastSeq   uint64
	LastHash  string
	ChainID   string
	AfterHead int // lines after the expected head (written after the checkpoint)
}

// NewVerifier returns a Verifier for logs keyed by this deployment HMAC key.
func NewVerifier(hmacKey []byte) (*Verifier, error) {
	k, err := deriveKeys(hmacKey)
	if err != nil {
		return nil, err
	}
	return &Verifier{key: k.chain}, nil
}

// Verify checks the links of one whole log read from r, without the key:
// seq and prev, and the headers, but not the MACs, so it cannot tell a
// re-chained edit. With the key, use NewVerifier. It returns the number of
// lines checked.
func Verify(r io.Reader) (int, error) {
	v := new(Verifier)
	n, err := v.Verify("", r)
	if err != nil {
		return n, err
	}
	_, err = v.Finish()
	return n, err
}

// Expect makes Finish require that the chain holds the line seq with this
// hash (a checkpoint's head).
func (v *Verifier) Expect(seq uint64, hash string) {
	v.expect, v.expectSeq, v.expectHash = true, seq, hash
}

// LastHash returns the sequence number and hash of the last line verified.
func (v *Verifier) LastHash() (uint64, string) { return v.seq, v.hash }

type record struct {
	fields
	line int
}

// Verify checks the next file of the chain and returns the number of lines it
// checked in this file. On the first broken link it returns a *ChainError.
func (v *Verifier) Verify(name string, r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	n, checked := 0, 0
	torn := 0
	next := func() (*record, error) {
		raw, err := readLine(br)
		if len(raw) == 0 && errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, &ChainError{File: name, Line: n + 1, Problem: Malformed, Detail: err.Error()}
		}
		n++
		if !bytes.HasSuffix(raw, []byte("\n")) {
			torn = len(raw) // the last bytes of the file: Finish or the next header decides
			return nil, nil
		}
		f, p := parse(v.key, raw[:len(raw)-1])
		switch p {
		case Changed:
			return nil, &ChainError{File: name, Line: n, Problem: Changed, Detail: "the line fails its MAC (edited, forged, or another key)"}
		case Malformed:
			return nil, &ChainError{File: name, Line: n, Problem: Malformed, Detail: "not a sealed JSON audit line with a seq"}
		}
		return &record{fields: f, line: n}, nil
	}
	cur, err := next()
	if err != nil {
		return 0, err
	}
	if cur == nil {
		if torn == 0 {
			return 0, &ChainError{File: name, Line: 1, Problem: Malformed, Detail: "empty file: no header"}
		}
		return 0, &ChainError{File: name, Line: 1, Problem: Malformed, Detail: "torn line (no newline) and no header"}
	}
	if err := v.header(name, cur); err != nil {
		return 0, err
	}
	v.files++
	for cur != nil {
		peek, perr := next()
		if err := v.link(name, cur, peek); err != nil {
			return checked, err
		}
		if err := v.accept(name, cur); err != nil {
			return checked, err
		}
		checked++
		if perr != nil {
			return checked, perr
		}
		cur = peek
	}
	v.torn, v.tornAt = torn, n
	return checked, nil
}

// readLine reads one line of at most maxLine bytes (with its newline).
func readLine(br *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		chunk, err := br.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > maxLine+1 {
			return nil, fmt.Errorf("line longer than %d bytes", maxLine)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return out, err
		}
	}
}

// header checks a file's first line and links the file to the one before.
func (v *Verifier) header(name string, h *record) error {
	at := func(p, d string) error { return &ChainError{File: name, Line: 1, Problem: p, Detail: d} }
	if h.Type != TypeHeader {
		return at(Missing, "the file does not begin with its header (its first lines were deleted)")
	}
	if h.Format != FormatV2 || h.ChainID == "" || h.PrevSeq != h.Seq-1 {
		return at(Malformed, "a header without format, chain id or a consistent prev_seq")
	}
	if !v.started {
		if h.Seq == 1 && (h.Prev != "" || h.PrevFile != "") {
			return at(Changed, "the first header of a chain links to nothing")
		}
		// The first file given may start mid-chain (older files deleted):
		// its header is the anchor.
		v.started, v.seq, v.hash, v.chainID, v.first = true, h.Seq-1, h.Prev, h.ChainID, h.Seq
		return nil
	}
	if h.ChainID != v.chainID {
		return at(Foreign, fmt.Sprintf("chain %s, not %s", h.ChainID, v.chainID))
	}
	if h.PrevTorn != v.torn {
		return at(Malformed, fmt.Sprintf("the previous file ends with %d torn byte(s), the header says %d", v.torn, h.PrevTorn))
	}
	if h.Seq == v.seq+1 && h.PrevFile != filepath.Base(v.file) {
		return at(Unlinked, fmt.Sprintf("the header follows %q, not %q", h.PrevFile, filepath.Base(v.file)))
	}
	v.torn = 0
	return nil
}

// accept records cur as verified.
func (v *Verifier) accept(name string, cur *record) error {
	if v.expect && cur.Seq == v.expectSeq {
		if cur.MAC != v.expectHash {
			return &ChainError{File: name, Line: cur.line, Problem: Mismatch,
				Detail: fmt.Sprintf("seq %d is not the line of the expected head", cur.Seq)}
		}
		v.seen = true
	} else if v.seen {
		v.after++
	}
	v.seq, v.hash, v.prev, v.file, v.line = cur.Seq, cur.MAC, cur.Prev, name, cur.line
	v.total++
	return nil
}

// link checks that cur follows the last verified line; peek (may be nil) is
// the line after cur, used to tell a reordered pair from missing lines.
func (v *Verifier) link(name string, cur, peek *record) error {
	at := func(p, d string) error { return &ChainError{File: name, Line: cur.line, Problem: p, Detail: d} }
	if cur.line > 1 && cur.Type == TypeHeader {
		return at(Inserted, "a header inside a file")
	}
	want := v.seq + 1
	switch {
	case cur.Seq == want && cur.Prev == v.hash:
		return nil
	case cur.Seq == want:
		return at(Changed, fmt.Sprintf("its prev is not the hash of seq %d", v.seq))
	case cur.Seq > want && peek != nil && peek.Seq == want:
		return at(Reordered, fmt.Sprintf("seq %d comes before seq %d", cur.Seq, peek.Seq))
	case cur.Seq > want:
		return at(Missing, fmt.Sprintf("%d line(s) missing before it (seq %d follows seq %d)", cur.Seq-want, cur.Seq, v.seq))
	case cur.Seq == v.seq && cur.Prev == v.prev:
		return at(Inserted, fmt.Sprintf("seq %d appears twice", cur.Seq))
	case peek != nil && peek.Seq == want:
		return at(Inserted, fmt.Sprintf("seq %d does not belong between seq %d and seq %d", cur.Seq, v.seq, peek.Seq))
	default:
		return at(Reordered, fmt.Sprintf("seq %d follows seq %d", cur.Seq, v.seq))
	}
}

// Finish checks the end of the chain: no torn last line, and the expected
// head (see Expect) reached.
func (v *Verifier) Finish() (Result, error) {
	r := Result{Lines: v.total, Files: v.files, FirstSeq: v.first, LastSeq: v.seq, LastHash: v.hash, ChainID: v.chainID, AfterHead: v.after}
	if v.torn > 0 {
		return r, &ChainError{File: v.file, Line: v.tornAt, Problem: Malformed, Detail: "torn last line (no newline)"}
	}
	if v.total == 0 {
		return r, &ChainError{Problem: Missing, Detail: "no lines"}
	}
	if v.expect && !v.seen {
		switch {
		case v.expectSeq < v.first:
			return r, &ChainError{File: v.file, Problem: Truncated,
				Detail: fmt.Sprintf("the expected head seq %d is before the first file given (seq %d)", v.expectSeq, v.first)}
		default:
			return r, &ChainError{File: v.file, Line: v.line, Problem: Truncated,
				Detail: fmt.Sprintf("the chain ends at seq %d, before the expected head seq %d: lines or files deleted from the end", v.seq, v.expectSeq)}
		}
	}
	return r, nil
}
