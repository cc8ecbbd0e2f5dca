package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime/metrics"
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
	m, err := p.Memory()
	return m.RSS, m.Peak, err
}

// MemStat is the process's memory from /proc/PID/status, in bytes (0 where
// the kernel does not report a line).
type MemStat struct {
	RSS  int64 // VmRSS: resident, RssAnon + RssFile + RssShmem
	Peak int64 // VmHWM: the peak of VmRSS
	// Anon (RssAnon) is private memory: the Go heap, stacks, C allocations
	// (SoftHSM). The leak check.
	Anon int64
	// File (RssFile) is mapped files resident in this process: the bbolt
	// store's mmapped data above all, the binary and shared libraries. They
	// are page cache: the kernel drops clean pages under memory pressure and
	// reads them back on the next touch.
	File int64
	// Shmem (RssShmem) is shared memory (System V, shmem, tmpfs mappings).
	Shmem int64
}

// Memory reads MemStat from the process's /proc status file.
func (p Proc) Memory() (MemStat, error) {
	f, err := os.Open(p.dir() + "/status")
	if err != nil {
		return MemStat{}, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	m, err := parseStatus(f)
	if err != nil {
		return m, fmt.Errorf("bench: %s/status: %w", p.dir(), err)
	}
	return m, nil
}

// parseStatus reads the memory lines of a /proc/PID/status text ("VmRSS:
// 1234 kB"); other lines, and lines it cannot read, are skipped.
func parseStatus(r io.Reader) (MemStat, error) {
	var m MemStat
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		case "RssShmem":
			dst = &m.Shmem
		default:
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 2 && fs[1] == "kB" {
			if kb, err := strconv.ParseInt(fs[0], 10, 64); err == nil && kb >= 0 {
				*dst = kb << 10
			}
		}
	}
	return m, sc.Err()
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

// goMemory is this process's Go runtime memory: what it has mapped and
// not released (all its memory classes less the heap pages given back), and
// the heap live at the last GC.
func goMemory() (held, live int64) {
	s := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(s)
	v := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	return v(0) - v(1), v(2)
}
