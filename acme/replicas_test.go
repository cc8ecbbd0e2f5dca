package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/etcd"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
)

// TestReplicasOnEtcd: two ACME servers, each with its own etcd client,
// answer alternate requests of one client: nonces, accounts, EAB keys,
// orders and authorizations made on one are used on the other.
func TestReplicasOnEtcd(t *testing.T) {
	cl := etcdtest.Start(t, 1)
	var stores []keystore.Store
	for range 2 {
		st, err := etcd.New(context.Background(), etcd.Config{Endpoints: cl.Endpoints})
		if err != nil {
			t.Fatalf("etcd.New: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	e := newEnv(t, envOpts{eab: true, stores: stores})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kid, hk, err := e.srv.CreateEAB(ctx, "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	hkey, _ := base64.RawURLEncoding.DecodeString(hk)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := e.acmeClient(t, key)
	if _, err := c.Register(ctx, &acme.Account{ExternalAccountBinding: &acme.ExternalAccountBinding{KID: kid, Key: hkey}}, acme.AcceptTOS); err != nil {
		t.Fatalf("Register: %v", err)
	}
	chain := e.orderCert(t, c, "replica.example.com")
	if len(chain) != 2 {
		t.Fatalf("chain of %d certificates", len(chain))
	}
	t.Run("a nonce is single-use across replicas", func(t *testing.T) {
		rc := e.raw(t, newECKey(t))
		n := rc.nonce()
		first := rc.post("new-account", map[string]any{"onlyReturnExisting": true}, jwsOpts{nonce: n, useJWK: true})
		second := rc.post("new-account", map[string]any{"onlyReturnExisting": true}, jwsOpts{nonce: n, useJWK: true})
		if first.problem() != "accountDoesNotExist" || second.problem() != "badNonce" {
			t.Errorf("same nonce twice (two replicas): got %s then %s, want accountDoesNotExist then badNonce", first.problem(), second.problem())
		}
	})
}
