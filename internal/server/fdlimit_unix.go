//go:build unix

package server

import (
	"log/slog"
	"syscall"
)

// warnFDLimit warns when the process's file descriptor limit leaves no room
// for maxConns connections plus the files the server itself opens.
func warnFDLimit(log *slog.Logger, maxConns int) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return
	}
	if need := uint64(maxConns) + fdReserve; r.Cur < need {
		log.Warn("file descriptor limit below limits.max_connections plus a reserve: lower max_connections or raise the limit",
			"nofile", r.Cur, "max_connections", maxConns, "reserve", fdReserve)
	}
}
