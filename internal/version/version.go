// Package version reports the version of this hsmgate build.
//
// Release builds set Version with
//
//	go build -ldflags "-X github.com/hsmgate/hsmgate/internal/version.Version=v1.2.3" ./cmd/hsmgate
//
// Otherwise it is taken from the module's build information (the module
// version for `go install ...@vX`, "(devel)" plus the VCS revision for a build
// in a work tree).
package version

import (
	"runtime/debug"
	"sync"
)

// Version is set at link time; empty means "read the build information".
var Version string

var (
	once     sync.Once
	resolved string
)

// String returns the version of the running binary, never empty.
func String() string {
	once.Do(func() { resolved = resolve() })
	return resolved
}

func resolve() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	if v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "devel+" + rev + dirty
	}
	return "devel"
}
