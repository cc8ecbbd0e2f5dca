package tinkaead_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/client/internal/hsmgatetest"
	"github.com/hsmgate/hsmgate/client/tinkaead"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func TestMain(m *testing.M) {
	os.Exit(hsmgatetest.Main(m, func(ctx context.Context, c *client.Client) error {
		_, err := c.Transit.Stub().CreateKey(ctx, &pb.CreateKeyRequest{Name: "tink-kek", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
		return err
	}))
}

// Tink's envelope AEAD with hsmgate as its KMS: Tink encrypts the data
// locally under a fresh data key, hsmgate wraps that key.
func Example() {
	ctx := context.Background()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	kms := tinkaead.NewKMSClient(c.Transit)
	kek, err := kms.GetAEAD("hsmgate://tink-kek")
	if err != nil {
		log.Fatal(err)
	}
	a := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), kek)

	ct, err := a.Encrypt([]byte("tink plaintext"), []byte("context"))
	if err != nil {
		log.Fatal(err)
	}
	pt, err := a.Decrypt(ct, []byte("context"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(pt))
	_, err = a.Decrypt(ct, []byte("other context"))
	fmt.Println(err != nil)

	// The remote AEAD alone is transit encryption; errors keep their kind.
	_, err = tinkaead.New(c.Transit, "no-such-key").Encrypt([]byte("x"), nil)
	fmt.Println(errors.Is(err, client.ErrNotFound))
	// Output:
	// tink plaintext
	// true
	// true
}

func TestKMSClientSupported(t *testing.T) {
	k := tinkaead.NewKMSClient(nil)
	for uri, want := range map[string]bool{
		"hsmgate://payments": true,
		"hsmgate://":         false,
		"aws-kms://arn":      false,
		"":                   false,
	} {
		if got := k.Supported(uri); got != want {
			t.Errorf("Supported(%q): got %v, want %v", uri, got, want)
		}
	}
	if _, err := k.GetAEAD("gcp-kms://x"); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("GetAEAD(gcp-kms://x): got %v, want ErrInvalidArgument", err)
	}
}
