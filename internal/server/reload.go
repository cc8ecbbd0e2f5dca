package server

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// tlsState is the server's live TLS material: the key pair (reloaded when its
// files change, or at once by Reload) and the client CA pool, which only
// Reload changes. Every handshake takes the current generation through
// GetConfigForClient, so a new client CA applies to the next connection.
type tlsState struct {
	kp         *keypairReloader
	minVersion uint16

	mu  sync.Mutex // serializes Reload
	gen atomic.Pointer[tlsGen]
}

// tlsGen is one generation of the client-certificate settings, with the
// per-listener configs built from it. Each generation has its own session
// ticket key: a session resumed from before a reload would skip the check of
// its client certificate against the new CAs.
type tlsGen struct {
	caFile string
	caPEM  []byte
	pool   *x509.CertPool // nil: client certificates are not requested
	grpc   *tls.Config
	http   *tls.Config
}

func newTLSState(c Config) (*tlsState, error) {
	kp, err := newKeypairReloader(c.CertFile, c.KeyFile, c.Logger)
	if err != nil {
		return nil, err
	}
	t := &tlsState{kp: kp, minVersion: c.MinTLSVersion}
	g, err := t.makeGen(c.ClientCAFile)
	if err != nil {
		return nil, err
	}
	t.gen.Store(g)
	return t, nil
}

// makeGen reads the client CA file ("" for none) and builds a generation;
// it changes nothing.
func (t *tlsState) makeGen(caFile string) (*tlsGen, error) {
	g := &tlsGen{caFile: caFile}
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("server: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("server: client CA %s: no PEM certificate found", caFile)
		}
		g.caPEM, g.pool = pemBytes, pool
	}
	var ticketKey [32]byte
	if _, err := rand.Read(ticketKey[:]); err != nil {
		return nil, fmt.Errorf("server: session ticket key: %w", err)
	}
	mk := func(protos []string) *tls.Config {
		c := &tls.Config{
			MinVersion:     t.minVersion,
			GetCertificate: t.kp.GetCertificate,
			NextProtos:     protos,
		}
		if g.pool != nil {
			c.ClientCAs = g.pool
			c.ClientAuth = tls.VerifyClientCertIfGiven
		}
		c.SetSessionTicketKeys([][32]byte{ticketKey})
		return c
	}
	g.grpc = mk([]string{"h2"})
	g.http = mk([]string{"h2", "http/1.1"})
	return g, nil
}

// base returns the listener's tls.Config: it only points at the current
// generation (http: the HTTPS listener's ALPN, else gRPC's).
func (t *tlsState) base(http bool) *tls.Config {
	return &tls.Config{
		MinVersion:     t.minVersion,
		GetCertificate: t.kp.GetCertificate,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if http {
				return t.gen.Load().http, nil
			}
			return t.gen.Load().grpc, nil
		},
	}
}

// TLSChange says what a ReloadTLS changed.
type TLSChange struct {
	Certificate bool // a new server certificate chain is served
	ClientCA    bool // the client CA file or its content changed
}

// ReloadTLS loads the certificate, key and client CA files (the paths may
// be new; clientCAFile "" stops asking for client certificates) and applies
// them to the next handshakes. All or nothing: on error nothing changes.
func (s *Server) ReloadTLS(certFile, keyFile, clientCAFile string) (TLSChange, error) {
	t := s.tlsState
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.gen.Load()
	g, err := t.makeGen(clientCAFile)
	if err != nil {
		return TLSChange{}, err
	}
	var ch TLSChange
	ch.ClientCA = g.caFile != cur.caFile || !bytes.Equal(g.caPEM, cur.caPEM)
	if ch.Certificate, err = t.kp.reset(certFile, keyFile); err != nil {
		return TLSChange{}, err
	}
	if ch.ClientCA || ch.Certificate {
		// New ticket keys too: no session from before resumes.
		t.gen.Store(g)
	}
	return ch, nil
}
