package transit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// RewrapKEK rewraps every stored blob (every key version and the ImportKey
// wrapping key) that is not wrapped under the current Config.KEK, finding
// the old KEKs by label through Config.OldKEK. It returns how many blobs it
// rewrapped. Run it after a KEK rotation; it is safe to run again (and
// concurrently with traffic: each key is a compare-and-swap update).
func (e *Engine) RewrapKEK(ctx context.Context) (int, error) {
	ents, err := e.store.List(ctx, KeyPrefix)
	if err != nil {
		return 0, fmt.Errorf("transit: rewrap: list keys: %w", err)
	}
	total := 0
	for _, ent := range ents {
		name := strings.TrimPrefix(ent.Key, KeyPrefix)
		n := 0
		_, err := e.update(ctx, name, func(rec *pb.TransitKeyRecord, _ *[]func()) error {
			var err error
			n, err = e.rewrapRecord(ctx, rec)
			if err == nil && n == 0 {
				return errNoChange
			}
			return err
		})
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return total, fmt.Errorf("transit: rewrap %q: %w", name, err)
		}
		total += n
	}
	for range maxCASRetries {
		ent, err := e.store.Get(ctx, WrappingKeyPath)
		if errors.Is(err, keystore.ErrNotFound) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("transit: rewrap wrapping key: %w", err)
		}
		rec := &pb.TransitKeyRecord{}
		if err := proto.Unmarshal(ent.Value, rec); err != nil {
			return total, fmt.Errorf("transit: wrapping key record is corrupt")
		}
		n, err := e.rewrapRecord(ctx, rec)
		if err != nil || n == 0 {
			return total, err
		}
		val, err := proto.Marshal(rec)
		if err != nil {
			return total, err
		}
		if _, err := e.store.Put(ctx, WrappingKeyPath, val, ent.Revision); errors.Is(err, keystore.ErrConflict) {
			continue
		} else if err != nil {
			return total, fmt.Errorf("transit: rewrap wrapping key: %w", err)
		}
		return total + n, nil
	}
	return total, fmt.Errorf("%w: wrapping key", ErrConflict)
}

// rewrapRecord rewraps rec's blobs that another KEK wrapped, in place.
func (e *Engine) rewrapRecord(ctx context.Context, rec *pb.TransitKeyRecord) (int, error) {
	n := 0
	cur := e.cfg.KEK.Label()
	for _, vr := range rec.GetVersions() {
		if len(vr.GetWrappedMaterial()) == 0 || vr.GetKekLabel() == cur {
			continue
		}
		old, err := e.kekFor(ctx, vr.GetKekLabel())
		if err != nil {
			return 0, fmt.Errorf("v%d: %w", vr.GetVersion(), err)
		}
		raw, err := old.Unwrap(ctx, vr.GetWrappedMaterial())
		if err != nil {
			return 0, fmt.Errorf("v%d: unwrap under %q: %w", vr.GetVersion(), vr.GetKekLabel(), err)
		}
		w, err := e.cfg.KEK.Wrap(ctx, raw)
		wipe(raw)
		if err != nil {
			return 0, fmt.Errorf("v%d: wrap: %w", vr.GetVersion(), err)
		}
		vr.WrappedMaterial, vr.KekLabel = w, cur
		n++
	}
	return n, nil
}
