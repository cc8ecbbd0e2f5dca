package main

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// wiredServices are the gRPC services of the fully wired server.
var wiredServices = []string{
	"grpc.health.v1.Health",
	"grpc.reflection.v1.ServerReflection",
	"grpc.reflection.v1alpha.ServerReflection",
	"hsmgate.v1.ACMEService",
	"hsmgate.v1.AuthMethodService",
	"hsmgate.v1.AuthService",
	"hsmgate.v1.PKIService",
	"hsmgate.v1.SSHCAService",
	"hsmgate.v1.SystemService",
	"hsmgate.v1.TransitService",
}

// TestWiredServerAuthCoverage wires a server as runServer does
// (wireServices: every service, then the interceptor, whose start-up check
// is auth.CheckTableCovers) and checks that: it serves exactly the services
// above, as reflection reports them; every method of each has a rule; the
// check fails, naming the method, when any service's rule is missing;
// transit is behind the interceptor and honours the configured limits; and
// closing stops the transit rotator and engine.
func TestWiredServerAuthCoverage(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, files, root := handDeps(t, func(c *config.Config) { c.Limits.MaxItemsPerRequest, c.Limits.MaxItemBytes = 3, 100 }, nil)
	srv := d.Server
	closed := false
	defer func() {
		if !closed {
			d.close()
		}
	}()
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := wireServices(ctx, d); err != nil {
		t.Fatalf("wireServices (with its start-up coverage check): %v", err)
	}

	info := srv.GetServiceInfo()
	var listed []string
	for name := range info {
		listed = append(listed, name)
	}
	sort.Strings(listed)
	if !slices.Equal(listed, wiredServices) {
		t.Errorf("services: got %v, want %v", listed, wiredServices)
	}
	if err := auth.CheckTableCovers(srv, d.Rules); err != nil {
		t.Errorf("CheckTableCovers: %v", err)
	}
	t.Run("the check bites", func(t *testing.T) {
		for _, svc := range wiredServices {
			for _, meth := range info[svc].Methods {
				full := "/" + svc + "/" + meth.Name
				rules := auth.Table{}
				for k, v := range d.Rules {
					if k != full {
						rules[k] = v
					}
				}
				if err := auth.CheckTableCovers(srv, rules); err == nil || !strings.Contains(err.Error(), full) {
					t.Errorf("without the rule for %s: got %v, want an error naming it", full, err)
				}
			}
		}
	})

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	cc, err := client.Dial(client.Options{Addr: srv.GRPCAddr(), CACert: files.CACert})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	t.Run("reflection lists what the check saw", func(t *testing.T) {
		if got := reflectServices(t, cc); !slices.Equal(got, wiredServices) {
			t.Errorf("reflection: got %v, want %v", got, wiredServices)
		}
	})

	t.Run("transit behind auth, with the configured limits", func(t *testing.T) {
		anon := hsmgatev1.NewTransitServiceClient(cc)
		if _, err := anon.ListKeys(ctx, &hsmgatev1.ListKeysRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("ListKeys without a token: got %v, want Unauthenticated", err)
		}
		rc, err := client.Dial(client.Options{Addr: srv.GRPCAddr(), CACert: files.CACert, Token: root})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		tc := hsmgatev1.NewTransitServiceClient(rc)
		if _, err := tc.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: "k", Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM}); err != nil {
			t.Fatal(err)
		}
		items := func(n, size int) []*hsmgatev1.EncryptItem {
			var its []*hsmgatev1.EncryptItem
			for range n {
				its = append(its, &hsmgatev1.EncryptItem{Plaintext: bytes.Repeat([]byte("x"), size)})
			}
			return its
		}
		for _, tc2 := range []struct {
			name  string
			items []*hsmgatev1.EncryptItem
			want  codes.Code
		}{
			{"at the limits", items(3, 100), codes.OK},
			{"one item too many", items(4, 1), codes.ResourceExhausted},
			{"one byte too many", items(1, 101), codes.ResourceExhausted},
		} {
			_, err := tc.Encrypt(ctx, &hsmgatev1.EncryptRequest{Name: "k", Items: tc2.items})
			if got := status.Code(err); got != tc2.want {
				t.Errorf("%s: got %v (%v), want %v", tc2.name, got, err, tc2.want)
			}
		}
	})

	t.Run("sshca with the configured item limit", func(t *testing.T) {
		rc, err := client.Dial(client.Options{Addr: srv.GRPCAddr(), CACert: files.CACert, Token: root})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		items := make([]*hsmgatev1.SSHSignItem, d.Config.Limits.MaxItemsPerRequest+1)
		for i := range items {
			items[i] = &hsmgatev1.SSHSignItem{}
		}
		_, err = hsmgatev1.NewSSHCAServiceClient(rc).SignUserKey(ctx, &hsmgatev1.SignUserKeyRequest{Role: "eng", Items: items})
		if got := status.Code(err); got != codes.ResourceExhausted {
			t.Errorf("%d items (limits.max_items_per_request %d): got %v (%v), want ResourceExhausted", len(items), d.Config.Limits.MaxItemsPerRequest, got, err)
		}
	})

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	d.close() // returns only once the rotator has stopped and the engine's watch ended
	closed = true
}

// reflectServices lists the services a server serves, through its
// reflection service (public: no token needed), sorted.
func reflectServices(t *testing.T, cc grpc.ClientConnInterface) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	var served []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		served = append(served, s.GetName())
	}
	sort.Strings(served)
	return served
}
