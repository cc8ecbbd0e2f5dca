package server

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// reloadInterval is the least time between two looks at the key pair files.
const reloadInterval = 10 * time.Second

// keypairReloader serves a certificate and key from files and reloads them
// when either file changes (cert-manager and friends rotate them in place).
// A pair that fails to load is logged and the previous one kept.
type keypairReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp stamp
	keyStamp  stamp
	checked   time.Time
}

type stamp struct {
	mod  time.Time
	size int64
}

func fileStamp(path string) (stamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{st.ModTime(), st.Size()}, nil
}

func newKeypairReloader(certFile, keyFile string, log *slog.Logger) (*keypairReloader, error) {
	k := &keypairReloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	if err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// load reads the pair; the caller holds mu or is the constructor.
func (k *keypairReloader) load() error {
	cs, err := fileStamp(k.certFile)
	if err != nil {
		return fmt.Errorf("server: TLS certificate: %w", err)
	}
	ks, err := fileStamp(k.keyFile)
	if err != nil {
		return fmt.Errorf("server: TLS key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("server: TLS key pair %s, %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.certStamp, k.keyStamp, k.checked = &cert, cs, ks, k.now()
	return nil
}

// reset loads the pair from certFile and keyFile now (e.g. on SIGHUP; the
// paths may be new) and reports whether the served certificate changed. On
// error the previous pair and paths stay.
func (k *keypairReloader) reset(certFile, keyFile string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old, oldCert, oldKey, cs, ks := k.cert, k.certFile, k.keyFile, k.certStamp, k.keyStamp
	k.certFile, k.keyFile = certFile, keyFile
	if err := k.load(); err != nil {
		k.cert, k.certFile, k.keyFile, k.certStamp, k.keyStamp = old, oldCert, oldKey, cs, ks
		return false, err
	}
	return !sameChain(old, k.cert), nil
}

func sameChain(a, b *tls.Certificate) bool {
	if a == nil || b == nil || len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if !bytes.Equal(a.Certificate[i], b.Certificate[i]) {
			return false
		}
	}
	return true
}

// GetCertificate is tls.Config.GetCertificate.
func (k *keypairReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.now().Sub(k.checked) < reloadInterval {
		return k.cert, nil
	}
	k.checked = k.now()
	cs, err1 := fileStamp(k.certFile)
	ks, err2 := fileStamp(k.keyFile)
	if err1 != nil || err2 != nil || (cs == k.certStamp && ks == k.keyStamp) {
		return k.cert, nil
	}
	old := k.cert
	if err := k.load(); err != nil {
		k.log.Warn("TLS key pair changed on disk but does not load; keeping the previous one", "error", err)
		k.cert = old
		return old, nil
	}
	k.log.Info("TLS key pair reloaded", "cert", k.certFile)
	return k.cert, nil
}
