package main

import (
	"context"
	"testing"

	"github.com/hsmgate/hsmgate/internal/leader"
)

// testJobs is the job runner for tests that build deps by hand (d.Server
// and d.Store set): started at once, so that the jobs the hooks add run;
// stopped by d.close (newJobRunner registers its Close).
func testJobs(t *testing.T, d *deps) *leader.Runner {
	t.Helper()
	r, err := newJobRunner(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	return r
}
