package transit

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestRewrapKEK: after a KEK rotation, blobs of the old KEK still unwrap
// (OldKEK) and RewrapKEK moves every blob to the new KEK, after which the
// old KEK is no longer needed.
func TestRewrapKEK(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("a", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	f.create("e", pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519, wrapped)
	if _, err := f.e.GetWrappingKey(ctx); err != nil {
		t.Fatal(err)
	}
	ct := f.encrypt("a", []byte("x"), nil, nil)
	kek2, _, err := f.mod.EnsureKEK(ctx, "kek2")
	if err != nil {
		t.Fatal(err)
	}
	old := f.kek
	f.cfg.KEK = kek2
	f.cfg.OldKEK = func(_ context.Context, label string) (Wrapper, error) {
		if label == old.Label() {
			return old, nil
		}
		return nil, ErrKeyNotFound
	}
	f.reopen()
	if got, c := f.decrypt("a", ct, nil, nil); c != codes.OK || string(got) != "x" {
		t.Fatalf("old-KEK blob via OldKEK: %q %v", got, c)
	}
	n, err := f.e.RewrapKEK(ctx)
	if err != nil || n != 3 {
		t.Fatalf("RewrapKEK = %d, %v; want 3 blobs", n, err)
	}
	if n, err := f.e.RewrapKEK(ctx); err != nil || n != 0 {
		t.Fatalf("second RewrapKEK = %d, %v; want 0", n, err)
	}
	f.cfg.OldKEK = nil
	f.reopen()
	if got, c := f.decrypt("a", ct, nil, nil); c != codes.OK || string(got) != "x" {
		t.Fatalf("after rewrap without the old KEK: %q %v", got, c)
	}
	if _, err := f.e.GetWrappingKey(ctx); err != nil {
		t.Fatal(err)
	}
	rec, _, _ := f.e.getRecord(ctx, "e")
	if rec.Versions[0].KekLabel != "kek2" {
		t.Fatalf("kek label %q, want kek2", rec.Versions[0].KekLabel)
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
