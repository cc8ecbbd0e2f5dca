package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
)

// faultStore is a real bbolt store whose writes of an order marked valid
// fail while failValid is set (a store that went away between two writes).
type faultStore struct {
	keystore.Store
	failValid atomic.Bool
	failed    atomic.Int64
}

var errInjected = errors.New("injected store failure")

func (f *faultStore) Put(ctx context.Context, key string, value []byte, expect int64) (int64, error) {
	if f.failValid.Load() && bytes.HasPrefix([]byte(key), []byte(prefixOrders)) && bytes.Contains(value, []byte(`"status":"valid"`)) {
		f.failed.Add(1)
		return 0, errInjected
	}
	return f.Store.Put(ctx, key, value, expect)
}

// TestFinalizeCommittedNeverFails: when the certificate is recorded but the
// order cannot be marked valid, finalize still answers success with the
// certificate (the write committed), the order reads as valid with its
// certificate while the store still fails, and is stored valid once it
// works again. The old finalize answered 500 after the commit.
func TestFinalizeCommittedNeverFails(t *testing.T) {
	bst, err := bbolt.Open(filepath.Join(t.TempDir(), "store.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bst.Close() })
	fs := &faultStore{Store: bst}
	e := newEnv(t, envOpts{stores: []keystore.Store{fs}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.acmeClient(t, newECKey(t))
	if _, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("Register: %v", err)
	}
	fs.failValid.Store(true)
	chain := e.orderCert(t, c, "committed.example.com") // fails the test on the old code
	if fs.failed.Load() == 0 {
		t.Fatal("no write of a valid order was attempted (the fault did not bite)")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil || leaf.DNSNames[0] != "committed.example.com" {
		t.Fatalf("certificate: %v %v", err, leaf)
	}
	es, err := bst.List(ctx, prefixOrders+"main/")
	if err != nil || len(es) != 1 {
		t.Fatalf("orders: %v, %d entries, want 1", err, len(es))
	}
	var stored order
	if err := json.Unmarshal(es[0].Value, &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Status != "processing" || stored.Cert != leaf.SerialNumber.Text(16) {
		t.Fatalf("stored order while the store fails: got %s with cert %q, want processing naming serial %s",
			stored.Status, stored.Cert, leaf.SerialNumber.Text(16))
	}
	orderURL := e.srv.url("main", "order", stored.ID)
	check := func(when string) {
		t.Helper()
		o, err := c.GetOrder(ctx, orderURL)
		if err != nil {
			t.Fatalf("%s: GetOrder: %v", when, err)
		}
		if o.Status != acme.StatusValid || o.CertURL == "" {
			t.Fatalf("%s: order status %q, certificate %q, want valid with its certificate", when, o.Status, o.CertURL)
		}
		got, err := c.FetchCert(ctx, o.CertURL, false)
		if err != nil || !bytes.Equal(got[0], chain[0]) {
			t.Fatalf("%s: FetchCert: %v, want the issued certificate", when, err)
		}
	}
	check("store still failing")
	fs.failValid.Store(false)
	check("store back")
	if err := json.Unmarshal(mustGet(t, bst, prefixOrders+"main/"+stored.ID), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Status != "valid" {
		t.Errorf("stored order after a read with the store back: got %s, want valid", stored.Status)
	}
}

func mustGet(t *testing.T, st keystore.Store, key string) []byte {
	t.Helper()
	e, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return e.Value
}
