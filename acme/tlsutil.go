package acme

import "crypto/tls"

// insecureTLS is for http-01 redirects to https: RFC 8555 8.3 has the
// server not validate that certificate (the key authorization is what proves control).
func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // RFC 8555 8.3
}
