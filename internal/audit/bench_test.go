package audit

import (
	"path/filepath"
	"testing"
)

func BenchmarkWrite(b *testing.B) {
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "audit.log"), MaxBytes: -1}, testKey)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	id := &Identity{Name: "payments-api", Kind: "token", Policies: []string{"payments"}, Accessor: l.HMAC("x")}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Write(&Entry{Type: "request", RequestID: "0123456789abcdef01234567", Identity: id, Method: "/hsmgate.v1.TransitService/Encrypt", Resource: "transit/keys/payments-eu", Items: 100}); err != nil {
			b.Fatal(err)
		}
	}
}
