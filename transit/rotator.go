package transit

import (
	"context"
	"encoding/pem"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// RotateInterval is how often RunRotator (or the leader runner's
// "transit-rotate" job) calls RotateDue: Config.RotateInterval.
func (e *Engine) RotateInterval() time.Duration { return e.cfg.RotateInterval }

// RunRotator rotates keys whose auto_rotate_period has passed since their
// last rotation, checking every Config.RotateInterval until ctx is done. A
// server with replicas runs RotateDue as a job of internal/leader's Runner
// instead, on the elected replica only. Either way replicas that race (an
// old leader finishing a pass while the new one starts) rotate a key once:
// each rotation is a compare-and-swap that checks the latest version and
// that the key is still due; a pass killed midway leaves every key rotated
// or not, and the next pass picks up those still due.
func (e *Engine) RunRotator(ctx context.Context) error {
	t := time.NewTicker(e.cfg.RotateInterval)
	defer t.Stop()
	for {
		if _, err := e.RotateDue(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("transit: auto-rotation pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// RotateDue does one auto-rotation pass at Config.Clock's time and returns
// the names it rotated.
func (e *Engine) RotateDue(ctx context.Context) ([]string, error) {
	ents, err := e.store.List(ctx, KeyPrefix)
	if err != nil {
		return nil, err
	}
	now := e.clock.Now()
	var rotated []string
	var firstErr error
	for _, ent := range ents {
		rec := &pb.TransitKeyRecord{}
		if proto.Unmarshal(ent.Value, rec) != nil || !due(rec, now) {
			continue
		}
		name := strings.TrimPrefix(ent.Key, KeyPrefix)
		from := rec.GetLatestVersion()
		// mine: this pass wrote the new version (not another replica whose
		// rotation the update found: that one is not counted here too).
		mine := false
		st, err := e.update(ctx, name, func(rec *pb.TransitKeyRecord, undo *[]func()) error {
			mine = false
			if rec.GetLatestVersion() != from || !due(rec, e.clock.Now()) {
				return errNoChange
			}
			mine = true
			return e.addVersion(ctx, rec, undo)
		})
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if !mine || st.rec.GetLatestVersion() == from {
			continue
		}
		e.metrics.rotated(st, rotateAuto)
		rotated = append(rotated, name)
	}
	return rotated, firstErr
}

func due(rec *pb.TransitKeyRecord, now time.Time) bool {
	p := rec.GetAutoRotatePeriod().AsDuration()
	if p <= 0 || rec.GetImported() {
		return false
	}
	last := rec.GetLastRotateTime()
	if last == nil {
		last = rec.GetCreateTime()
	}
	return !now.Before(last.AsTime().Add(p))
}

func pemDecode(b []byte) ([]byte, []byte) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, rest
	}
	return blk.Bytes, rest
}
