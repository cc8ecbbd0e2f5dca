package transit

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretNeverPrints(t *testing.T) {
	s := newSecret([]byte{0xde, 0xad, 0xbe, 0xef})
	holder := struct{ K secret }{s}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		for _, v := range []any{s, holder, &holder} {
			got := fmt.Sprintf(verb, v)
			if strings.Contains(got, "deadbeef") || strings.Contains(got, "222 173") || strings.Contains(got, "0xde") || strings.Contains(got, "\\xde") {
				t.Errorf("fmt %s of %T = %q, shows key bytes", verb, v, got)
			}
			if !strings.Contains(got, redacted) {
				t.Errorf("fmt %s of %T = %q, want it to contain %q", verb, v, got, redacted)
			}
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "k", s)
	if got := buf.String(); !strings.Contains(got, "k="+redacted) {
		t.Errorf("slog line = %q, want k=%s", got, redacted)
	}
}
