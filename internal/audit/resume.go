package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// start is where Open found the chain.
type start struct {
	head     head
	genesis  bool     // no log at all: a new chain begins
	f        *os.File // the current file, to append to (nil: start a file)
	size     int64
	prevFile string // base name of the file the new file's header links to
	prevTorn int
	rotate   bool   // the current file must be rotated out first (torn tail, old format)
	legacy   string // the current file is of the old, unkeyed format
}

// resume finds the chain's head (the last line of the file, or of the newest
// rotated file), checks it against the checkpoint, and opens the file to
// continue it.
func (l *Log) resume() error {
	cp, err := l.ownCheckpoint()
	if err != nil {
		return err
	}
	s, err := l.findStart()
	if err != nil {
		return err
	}
	if err := checkAgainst(s, cp); err != nil {
		if s.f != nil {
			s.f.Close()
		}
		return err
	}
	l.head = s.head
	if s.genesis {
		if l.head.chainID, err = newChainID(); err != nil {
			return fmt.Errorf("audit: chain id: %w", err)
		}
		l.log.Warn("audit: a new chain begins", "path", l.cfg.Path, "chain_id", l.head.chainID, "old_format_file", s.legacy)
	}
	if s.f != nil && !s.rotate {
		st, err := s.f.Stat()
		if err != nil {
			s.f.Close()
			return fmt.Errorf("audit: stat: %w: %v", ErrUnavailable, err)
		}
		l.f, l.fi, l.size = s.f, st, s.size
		return nil
	}
	if s.f != nil {
		s.f.Close()
		dst := rotatedName(l.cfg.Path, l.now())
		if err := os.Rename(l.cfg.Path, dst); err != nil {
			return fmt.Errorf("audit: rotate: %w: %v", ErrUnavailable, err)
		}
		if !s.genesis {
			s.prevFile = filepath.Base(dst)
		}
	}
	if err := l.startFile(s.prevFile, s.prevTorn); err != nil {
		l.broken = nil
		if l.f != nil {
			l.f.Close()
			l.f = nil
		}
		return err
	}
	return nil
}

// ownCheckpoint reads the checkpoint beside the log (nil if there is none)
// and checks its MAC, and its signature against the signer's key when both
// are there.
func (l *Log) ownCheckpoint() (*Checkpoint, error) {
	if _, err := os.Stat(l.cpPath); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	cp, err := ReadCheckpoint(l.cpPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	var pub any
	if l.opts.Signer != nil && len(cp.Signature) > 0 {
		pub = l.opts.Signer.Public()
	}
	if _, err := l.keys.verifyCheckpoint(cp, pub); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTampered, l.cpPath, err)
	}
	return cp, nil
}

// findStart reads the current file, or the newest rotated file when the
// current one is missing or empty.
func (l *Log) findStart() (start, error) {
	var s start
	f, fi, err := openRegular(l.cfg.Path, false)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return s, fmt.Errorf("audit: open: %w: %v", ErrUnavailable, err)
	case fi.Size() == 0:
		f.Close()
	default:
		t, err := readTail(f, fi.Size())
		if err != nil {
			f.Close()
			return s, fmt.Errorf("audit: read %s: %w: %v", l.cfg.Path, ErrUnavailable, err)
		}
		if t.first == nil {
			// Only a partial first line: a crash while the header of a new
			// file was written. Nothing was recorded in it; start it again
			// after the newest rotated file.
			l.log.Warn("audit: dropping a partial header left by a crash", "path", l.cfg.Path, "bytes", t.torn)
			err := f.Truncate(0)
			f.Close()
			if err != nil {
				return s, fmt.Errorf("audit: truncate %s: %w: %v", l.cfg.Path, ErrUnavailable, err)
			}
			break
		}
		s.f, s.size = f, fi.Size()
		if _, _, ok := unseal(t.first); !ok {
			// The old, unkeyed format: rotate it out; a new chain begins.
			s.rotate, s.genesis, s.legacy = true, true, l.cfg.Path
			return s, nil
		}
		if err := l.fromTail(&s, t, filepath.Base(l.cfg.Path)); err != nil {
			f.Close()
			return s, err
		}
		s.rotate = t.torn > 0
		return s, nil
	}
	names, _, err := rotatedFiles(l.cfg.Path)
	if err != nil {
		return s, fmt.Errorf("audit: list rotated files: %w: %v", ErrUnavailable, err)
	}
	if len(names) == 0 {
		s.genesis = true
		return s, nil
	}
	newest := names[len(names)-1]
	t, err := readTailPath(newest)
	if err != nil {
		return s, fmt.Errorf("audit: read %s: %w: %v", newest, ErrUnavailable, err)
	}
	if err := l.fromTail(&s, t, filepath.Base(newest)); err != nil {
		return s, err
	}
	s.prevFile = filepath.Base(newest)
	return s, nil
}

// fromTail takes the head from a file's header and last whole line.
func (l *Log) fromTail(s *start, t tail, name string) error {
	hdr, p := parse(l.keys.chain, t.first)
	if t.first == nil || p != "" || hdr.Type != TypeHeader {
		return fmt.Errorf("%w: %s does not begin with a valid header (first lines cut, or another key)", ErrTampered, name)
	}
	last, p := parse(l.keys.chain, t.last)
	if p != "" {
		return fmt.Errorf("%w: the last line of %s fails its MAC (edited, or another key)", ErrTampered, name)
	}
	s.head = head{seq: last.Seq, hash: last.MAC, chainID: hdr.ChainID}
	s.prevTorn = t.torn
	return nil
}

// checkAgainst refuses a start that does not reach the checkpoint.
func checkAgainst(s start, cp *Checkpoint) error {
	if cp == nil {
		return nil
	}
	switch {
	case s.genesis:
		return fmt.Errorf("%w: no log to continue, but a checkpoint at seq %d exists (the log was deleted or replaced; "+
			"move the checkpoint aside to start a new chain on purpose)", ErrTampered, cp.Seq)
	case s.head.chainID != cp.ChainID:
		return fmt.Errorf("%w: the log is of chain %s, the checkpoint of chain %s", ErrTampered, s.head.chainID, cp.ChainID)
	case s.head.seq < cp.Seq:
		return fmt.Errorf("%w: the log ends at seq %d, before the checkpoint's seq %d (lines or files deleted)", ErrTampered, s.head.seq, cp.Seq)
	case s.head.seq == cp.Seq && s.head.hash != cp.Hash:
		return fmt.Errorf("%w: the last line (seq %d) is not the one the checkpoint names", ErrTampered, cp.Seq)
	}
	return nil
}
