package client_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/client"
)

// TestGenerateDataKeyWrappedOnly (real dev server): WithWrappedOnly never
// carries the plaintext key back, and the wrapped key decrypts to a key of
// the asked size; without it both forms come back and agree.
func TestGenerateDataKeyWrappedOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	dk, err := c.Transit.GenerateDataKey(ctx, "example", 256, client.WithWrappedOnly())
	if err != nil {
		t.Fatal(err)
	}
	if dk.Plaintext != nil || len(dk.Ciphertext) == 0 {
		t.Fatalf("WithWrappedOnly: got plaintext %d bytes, ciphertext %d bytes; want none and some", len(dk.Plaintext), len(dk.Ciphertext))
	}
	key, err := c.Transit.Decrypt(ctx, "example", dk.Ciphertext)
	if err != nil || len(key) != 32 {
		t.Fatalf("Decrypt of the wrapped key: got %d bytes, %v; want 32", len(key), err)
	}

	both, err := c.Transit.GenerateDataKey(ctx, "example", 128)
	if err != nil {
		t.Fatal(err)
	}
	back, err := c.Transit.Decrypt(ctx, "example", both.Ciphertext)
	if err != nil || len(both.Plaintext) != 16 || !bytes.Equal(back, both.Plaintext) {
		t.Errorf("GenerateDataKey: plaintext %d bytes, unwrapped %d bytes (%v); want the same 16", len(both.Plaintext), len(back), err)
	}
}
