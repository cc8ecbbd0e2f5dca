package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func init() {
	register(&scenario{name: "acme-order", summary: "one ACME order per item with golang.org/x/crypto/acme: new order, http-01, finalize, download (issuer key type: --key-type)",
		keyTypes: []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", "rsa-4096"}, minBatch: 1, maxBatch: 1, prepare: prepareACMEOrder})
}

// ACMETarget is what the acme-order scenario needs beyond gRPC: the ACME
// server of an in-process hsmgate whose challenge validation was pointed
// (test-only) at HTTP01's loopback port.
type ACMETarget struct {
	// BaseURL is the server's HTTPS base, e.g. https://127.0.0.1:8443;
	// directories are at BaseURL/acme/<name>/directory.
	BaseURL string
	// Roots trust the server's TLS certificate.
	Roots *x509.CertPool
	// HTTP01 answers the http-01 challenges.
	HTTP01 *HTTP01Responder
}

// HTTP01Responder serves /.well-known/acme-challenge/<token> on a loopback
// port: the port the in-process server validates http-01 against.
type HTTP01Responder struct {
	ln   net.Listener
	srv  *http.Server
	mu   sync.RWMutex
	resp map[string]string
}

// NewHTTP01Responder listens on 127.0.0.1:0 and serves until Close.
func NewHTTP01Responder() (*HTTP01Responder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: http-01 responder: %w", err)
	}
	h := &HTTP01Responder{ln: ln, resp: map[string]string{}}
	h.srv = &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 10 * time.Second}
	go h.srv.Serve(ln)
	return h, nil
}

func (h *HTTP01Responder) serve(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
	h.mu.RLock()
	body, found := h.resp[tok]
	h.mu.RUnlock()
	if !ok || !found {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(body))
}

// Port is the port the responder listens on.
func (h *HTTP01Responder) Port() int { return h.ln.Addr().(*net.TCPAddr).Port }

// Close stops the responder.
func (h *HTTP01Responder) Close() error { return h.srv.Close() }

func (h *HTTP01Responder) set(token, keyAuth string) {
	h.mu.Lock()
	h.resp[token] = keyAuth
	h.mu.Unlock()
}

func (h *HTTP01Responder) del(token string) {
	h.mu.Lock()
	delete(h.resp, token)
	h.mu.Unlock()
}

// acmeDomain is the parent of every name the scenario orders.
const acmeDomain = "acme.bench.example.com"

// acmeOrders runs whole ACME orders. Accounts are made on first use and
// then reused: at most one per concurrent worker.
type acmeOrders struct {
	dirURL string
	hc     *http.Client
	http01 *HTTP01Responder
	prefix string
	seq    atomic.Uint64
	leaf   crypto.Signer // the certificates' key (CSR per order: its names differ)
	free   chan *acme.Client
	mu     sync.Mutex
	made   int
}

// account takes a registered account, or registers a new one.
func (a *acmeOrders) account(ctx context.Context) (*acme.Client, error) {
	select {
	case c := <-a.free:
		return c, nil
	default:
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	c := &acme.Client{Key: k, DirectoryURL: a.dirURL, HTTPClient: a.hc, UserAgent: "hsmgate-bench"}
	if _, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		return nil, fmt.Errorf("bench: acme register: %w", err)
	}
	a.mu.Lock()
	a.made++
	a.mu.Unlock()
	return c, nil
}

func (a *acmeOrders) release(c *acme.Client) {
	select {
	case a.free <- c:
	default:
	}
}

// pollEvery is the bench's poll interval for an authorization: the server
// answers Retry-After: 1 while validating, which x/crypto's
// WaitAuthorization sleeps; the bench measures the server, not that sleep.
const pollEvery = 5 * time.Millisecond

// order completes one order for a fresh name and returns the PEM-less DER
// chain (leaf first).
func (a *acmeOrders) order(ctx context.Context) ([][]byte, error) {
	c, err := a.account(ctx)
	if err != nil {
		return nil, err
	}
	defer a.release(c)
	name := fmt.Sprintf("o%d.%s.%s", a.seq.Add(1), a.prefix, acmeDomain)
	o, err := c.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		return nil, fmt.Errorf("bench: acme new order: %w", err)
	}
	for _, u := range o.AuthzURLs {
		if err := a.authorize(ctx, c, u); err != nil {
			return nil, err
		}
	}
	if o, err = c.WaitOrder(ctx, o.URI); err != nil { // ready on the first read once every authz is valid
		return nil, fmt.Errorf("bench: acme order: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
	}, a.leaf)
	if err != nil {
		return nil, err
	}
	chain, _, err := c.CreateOrderCert(ctx, o.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("bench: acme finalize: %w", err)
	}
	if len(chain) < 2 {
		return nil, fmt.Errorf("bench: acme: chain of %d certificates, want leaf and issuer", len(chain))
	}
	return chain, nil
}

// authorize answers the authorization's http-01 challenge and polls until
// it is valid.
func (a *acmeOrders) authorize(ctx context.Context, c *acme.Client, u string) error {
	az, err := c.GetAuthorization(ctx, u)
	if err != nil {
		return fmt.Errorf("bench: acme authz: %w", err)
	}
	if az.Status == acme.StatusValid {
		return nil
	}
	var ch *acme.Challenge
	for _, x := range az.Challenges {
		if x.Type == "http-01" {
			ch = x
		}
	}
	if ch == nil {
		return errors.New("bench: acme: no http-01 challenge offered")
	}
	ka, err := c.HTTP01ChallengeResponse(ch.Token)
	if err != nil {
		return err
	}
	a.http01.set(ch.Token, ka)
	defer a.http01.del(ch.Token)
	if _, err := c.Accept(ctx, ch); err != nil {
		return fmt.Errorf("bench: acme accept: %w", err)
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		az, err := c.GetAuthorization(ctx, u)
		if err != nil {
			return fmt.Errorf("bench: acme authz: %w", err)
		}
		switch az.Status {
		case acme.StatusValid:
			return nil
		case acme.StatusInvalid, acme.StatusDeactivated, acme.StatusExpired, acme.StatusRevoked:
			return fmt.Errorf("bench: acme: authorization %s", az.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func prepareACMEOrder(ctx context.Context, env *Env, p Params) (*workload, error) {
	t := env.ACME
	if t == nil {
		return nil, errors.New("bench: acme-order needs --target inprocess (its challenge validation is pointed at the bench's own http-01 responder)")
	}
	c := hsmgatev1.NewPKIServiceClient(env.Conns[0])
	name := "bench-" + env.Prefix
	if _, err := c.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{
		Name: name, KeyType: p.KeyType, Subject: &hsmgatev1.Subject{CommonName: "hsmgate bench ACME " + env.Prefix},
		Ttl: durationpb.New(24 * time.Hour),
	}); err != nil {
		return nil, fmt.Errorf("bench: create issuer: %w", err)
	}
	if _, err := c.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: &hsmgatev1.Role{
		Name: name, Issuer: name, AllowedDomains: []string{acmeDomain}, AllowSubdomains: true,
		KeyType: "ecdsa-p256", Ttl: durationpb.New(time.Hour), MaxTtl: durationpb.New(2 * time.Hour),
		ServerFlag: true,
	}}); err != nil {
		return nil, fmt.Errorf("bench: create role: %w", err)
	}
	if _, err := hsmgatev1.NewACMEServiceClient(env.Conns[0]).WriteDirectory(ctx, &hsmgatev1.WriteDirectoryRequest{
		Directory: &hsmgatev1.ACMEDirectory{Name: name, Role: name, AllowedChallenges: []string{"http-01"}},
	}); err != nil {
		return nil, fmt.Errorf("bench: create ACME directory: %w", err)
	}
	leaf, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: t.Roots}, MaxIdleConnsPerHost: max(p.Concurrency, 2)}
	a := &acmeOrders{
		dirURL: t.BaseURL + "/acme/" + name + "/directory",
		hc:     &http.Client{Transport: tr, Timeout: time.Minute},
		http01: t.HTTP01, prefix: strings.ToLower(strings.ReplaceAll(env.Prefix, "_", "-")), leaf: leaf,
		free: make(chan *acme.Client, 4*p.Concurrency+4),
	}
	w := &workload{
		Describe: fmt.Sprintf("ACME order (golang.org/x/crypto/acme: new order, http-01, finalize, download), issuer %s, zlint on", p.KeyType),
		Close: func() {
			tr.CloseIdleConnections()
			_, _ = c.DeleteRole(context.Background(), &hsmgatev1.DeleteRoleRequest{Name: name})
		},
		// No gRPC request to echo: an order is about ten HTTPS requests.
		NoTransport: "an ACME order is HTTPS requests, not one gRPC message",
	}
	w.Request = func(batch int) (request, error) {
		if batch != 1 {
			return request{}, errors.New("bench: acme-order: one order per item (--batch 1)")
		}
		return request{Call: func(ctx context.Context, _ grpc.ClientConnInterface) (proto.Message, error) {
			_, err := a.order(ctx)
			return nil, err
		}}, nil
	}
	chain, err := a.order(ctx) // fail early, and the certificate's size
	if err != nil {
		w.Close()
		return nil, err
	}
	certSize := len(chain[0])
	// The limits: the issuer's signature alone, over a TBSCertificate-sized
	// message, in Go (software) and in the HSM (the same PKCS#11 sign as
	// pki-sign's limit).
	tbs := make([]byte, max(certSize-100, 300))
	hw := &workload{}
	if err := signLimits(ctx, env, hw, p.KeyType, tbs, nil); err != nil {
		w.Close()
		return nil, err
	}
	w.Software, w.SoftwareOp = hw.Software, hw.SoftwareOp
	w.HSM, w.HSMOp = hw.HSM, hw.HSMOp
	if hw.Close != nil {
		prev := w.Close
		w.Close = func() { prev(); hw.Close() }
	}
	return w, nil
}
