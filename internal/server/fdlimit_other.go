//go:build !unix

package server

import "log/slog"

func warnFDLimit(*slog.Logger, int) {}
