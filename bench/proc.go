package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc reads the CPU time and memory of the process that serves: this one
// (PID 0, getrusage and /proc/self) or another (its /proc/PID).
type Proc struct{ PID int }

func (p Proc) dir() string {
	if p.PID == 0 {
		return "/proc/self"
	}
	return "/proc/" + strconv.Itoa(p.PID)
}

// CPU is the user+system CPU time used so far.
func (p Proc) CPU() (time.Duration, error) {
	if p.PID == 0 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0, fmt.Errorf("bench: getrusage: %w", err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
	}
	b, err := os.ReadFile(p.dir() + "/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	// Fields after the ")" that ends the command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 Hz on Linux).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: %s/stat: unexpected format", p.dir())
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: %s/stat: unexpected format", p.dir())
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: %s/stat: unexpected format", p.dir())
	}
	return time.Duration(ut+st) * (time.Second / 100), nil
}

// Mem returns the current (VmRSS) and peak (VmHWM) resident set size in bytes.
func (p Proc) Mem() (rss, peak int64, err error) {
	f, err := os.Open(p.dir() + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &rss
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &peak
		default:
			continue
		}
		fs := strings.Fields(line)
		if len(fs) >= 2 {
			kb, err := strconv.ParseInt(fs[1], 10, 64)
			if err == nil {
				*dst = kb << 10
			}
		}
	}
	return rss, peak, sc.Err()
}

// systemBusy is the CPU time all processes have used (busy jiffies of
// /proc/stat: user, nice, system, irq, softirq, steal), or 0 if unreadable.
func systemBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0
		}
		ticks += v
	}
	return time.Duration(ticks) * (time.Second / 100)
}
