package config

import (
	"strings"
	"testing"
	"time"
)

func TestAuditRetention(t *testing.T) {
	c, err := Parse([]byte("audit:\n  path: a.log\n  max_size: 2048\n  max_files: 3\n  max_age: 48h\n  checkpoint_interval: 5s\n"), "/x")
	if err != nil {
		t.Fatal(err)
	}
	a := c.Audit
	if a.MaxBytes != 2048 || a.MaxFiles != 3 || a.MaxAge != 48*time.Hour || a.CheckpointInterval != 5*time.Second {
		t.Errorf("got %+v, want max 2048 bytes, 3 files, 48h, checkpoint every 5s", a.Config)
	}
	for _, bad := range []struct{ doc, want string }{
		{"audit:\n  path: a.log\n  max_size: 1\n  max_bytes: 1\n", "not both"},
		{"audit:\n  path: a.log\n  max_age: -1h\n", "max_age"},
	} {
		if _, err := Parse([]byte(bad.doc), "/x"); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: got %v, want an error containing %q", bad.doc, err, bad.want)
		}
	}
}
