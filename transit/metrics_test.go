package transit

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// series lists every gathered series as "name{l1=v1,...}".
func series(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out = append(out, mf.GetName()+labelString(m))
		}
	}
	return out
}

func labelString(m *dto.Metric) string {
	var b strings.Builder
	b.WriteString("{")
	for i, l := range m.GetLabel() {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(l.GetName() + "=" + l.GetValue())
	}
	b.WriteString("}")
	return b.String()
}

// TestMetricsPerKey: with PerKeyMetrics the collectors register on the
// given registry, count by key, and a deleted key's series go away.
func TestMetricsPerKey(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(c *Config) { c.Registerer = reg; c.PerKeyMetrics = true })
	ctx := context.Background()
	f.create("m", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.DeletionAllowed = true })
	r, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "m", Items: make([]*pb.EncryptItem, 5)})
	if err != nil {
		t.Fatal(err)
	}
	f.e.Decrypt(ctx, &pb.DecryptRequest{Name: "m", Items: []*pb.DecryptItem{{Ciphertext: r.Results[0].Ciphertext}, {Ciphertext: []byte("bad")}}})
	if _, err := f.e.RotateKey(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	const typ = "aes256-gcm"
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"encrypt items", value(f.e.metrics.items.WithLabelValues("m", typ, "encrypt")), 5},
		{"decrypt items", value(f.e.metrics.items.WithLabelValues("m", typ, "decrypt")), 2},
		{"decrypt errors", value(f.e.metrics.itemErrs.WithLabelValues("m", typ, "decrypt")), 1},
		{"latest version", value(f.e.metrics.latest.WithLabelValues("m")), 2},
		{"reserved v1", value(f.e.metrics.reserved.WithLabelValues("m", "1")), 1024},
		{"rotations", value(f.e.metrics.rotations.WithLabelValues("m", typ, "rpc")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 5 {
		t.Fatalf("registry gathers %d families, %v; want 5", len(mfs), err)
	}
	if err := f.e.DeleteKey(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	for _, s := range series(t, reg) {
		if strings.Contains(s, "key=m") {
			t.Errorf("after delete: got series %s, want none of key m", s)
		}
	}
}

// TestMetricsDefault: without PerKeyMetrics no series names a key, and a
// key type has series only for the operations it supports.
func TestMetricsDefault(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(c *Config) { c.Registerer = reg })
	ctx := context.Background()
	f.create("secret-name-aead", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	f.create("secret-name-sig", pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519, wrapped)
	f.create("secret-name-mac", pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256, wrapped)
	f.create("other-aead", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	for _, k := range []string{"secret-name-aead", "other-aead"} {
		if _, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: k, Items: make([]*pb.EncryptItem, 2)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: "secret-name-sig", Items: []*pb.SignItem{{Input: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.RotateKey(ctx, "secret-name-sig"); err != nil {
		t.Fatal(err)
	}
	got := series(t, reg)
	t.Run("no key names", func(t *testing.T) {
		for _, s := range got {
			if strings.Contains(s, "key=") || strings.Contains(s, "name") {
				t.Errorf("got series %s, want no key label", s)
			}
		}
	})
	t.Run("only supported operations", func(t *testing.T) {
		want := map[string][]string{
			"aes256-gcm":  {"encrypt", "decrypt", "rewrap", "datakey"},
			"ed25519":     {"sign", "verify"},
			"hmac-sha256": {"hmac", "verify_hmac"},
		}
		n := 0
		for _, s := range got {
			if !strings.HasPrefix(s, "hsmgate_transit_items_total{") {
				continue
			}
			n++
			ok := false
			for typ, ops := range want {
				for _, o := range ops {
					if s == "hsmgate_transit_items_total{op="+o+",type="+typ+"}" {
						ok = true
					}
				}
			}
			if !ok {
				t.Errorf("got series %s, want none for an operation its type lacks", s)
			}
		}
		if n != 8 {
			t.Errorf("got %d item series, want 8 (4 aead + 2 sign + 2 hmac): %v", n, got)
		}
	})
	t.Run("counts by type", func(t *testing.T) {
		if v := value(f.e.metrics.items.WithLabelValues("aes256-gcm", "encrypt")); v != 4 {
			t.Errorf("aes256-gcm encrypt: got %v, want 4", v)
		}
		if v := value(f.e.metrics.rotations.WithLabelValues("ed25519", "rpc")); v != 1 {
			t.Errorf("ed25519 rotations: got %v, want 1", v)
		}
	})
}
