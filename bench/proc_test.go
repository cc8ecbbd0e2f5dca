package bench

import (
	"strings"
	"testing"
)

// A /proc/PID/status of Linux 6.x, cut to the lines around the memory ones.
const statusText = `Name:	hsmgate
Umask:	0022
State:	S (sleeping)
Pid:	4242
VmPeak:	 2503404 kB
VmSize:	 2437868 kB
VmLck:	       0 kB
VmPin:	       0 kB
VmHWM:	  534428 kB
VmRSS:	  522604 kB
RssAnon:	   61440 kB
RssFile:	  460140 kB
RssShmem:	    1024 kB
VmData:	  300000 kB
VmSwap:	       0 kB
Threads:	23
`

func TestParseStatus(t *testing.T) {
	t.Run("memory lines", func(t *testing.T) {
		got, err := parseStatus(strings.NewReader(statusText))
		if err != nil {
			t.Fatal(err)
		}
		want := MemStat{RSS: 522604 << 10, Peak: 534428 << 10, Anon: 61440 << 10, File: 460140 << 10, Shmem: 1024 << 10}
		if got != want {
			t.Errorf("parseStatus = %+v, want %+v", got, want)
		}
		if got.Anon+got.File+got.Shmem != got.RSS {
			t.Errorf("RssAnon+RssFile+RssShmem = %d, want VmRSS %d", got.Anon+got.File+got.Shmem, got.RSS)
		}
	})
	t.Run("older kernel without Rss lines", func(t *testing.T) {
		got, err := parseStatus(strings.NewReader("VmHWM:\t 100 kB\nVmRSS:\t 90 kB\n"))
		if err != nil {
			t.Fatal(err)
		}
		if want := (MemStat{RSS: 90 << 10, Peak: 100 << 10}); got != want {
			t.Errorf("parseStatus = %+v, want %+v", got, want)
		}
	})
	t.Run("malformed lines are skipped", func(t *testing.T) {
		got, err := parseStatus(strings.NewReader("VmRSS:\tlots kB\nRssAnon:\t-5 kB\nRssFile:\t7 MB\nRssFileX:\t9 kB\nRssShmem\t3 kB\nVmHWM: 8 kB\n"))
		if err != nil {
			t.Fatal(err)
		}
		if want := (MemStat{Peak: 8 << 10}); got != want {
			t.Errorf("parseStatus = %+v, want %+v", got, want)
		}
	})
}

func TestProcMemorySelf(t *testing.T) {
	m, err := Proc{}.Memory()
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Anon <= 0 || m.File <= 0 {
		t.Fatalf("Memory() = %+v, want VmRSS, RssAnon and RssFile above 0", m)
	}
	if m.Anon > m.RSS || m.File > m.RSS || m.Peak < m.RSS/2 {
		t.Errorf("Memory() = %+v: parts above the whole, or peak far below RSS", m)
	}
	rss, peak, err := Proc{}.Mem()
	if err != nil || rss <= 0 || peak <= 0 {
		t.Errorf("Mem() = %d, %d, %v; want both above 0", rss, peak, err)
	}
}
