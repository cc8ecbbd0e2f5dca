package main

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// Every failed command prints one line on stderr, in one format, made here:
//
//	hsmgate: <verb>: <Code>: <message>
//
// <verb> is the command path without "hsmgate" ("transit encrypt", "pki
// issue", "status"); <Code> is a gRPC code name: the server's code when the
// error carries a status, else the kind of a local error (InvalidArgument for
// a mistake on the command line, NotFound for a missing file, ...), Unknown
// when nothing classifies it. <message> is the server's message, or the local
// error's text, without the "rpc error: code = ... desc =" wrapping and
// without a repeated verb. A mistake on the command line exits 2, anything
// else 1.

// usageError marks a mistake on the command line (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// ranError marks an error returned by a command's RunE: an error without it
// came from cobra before the command ran (unknown flag or command, wrong
// number of arguments, a required flag missing), a usage error.
type ranError struct{ error }

func (e ranError) Unwrap() error { return e.error }

// markRunErrors wraps the RunE of c and of every command under it, so that
// formatError and exitCode can tell cobra's own errors from the commands',
// and checks the output flags first.
//
// A group of verbs (transit, pki keys, ...) that cobra would answer with its
// help and exit 0 for a misspelled verb gets a RunE that refuses it.
func markRunErrors(c *cobra.Command) {
	if c.HasParent() && c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q (see %s --help)", args[0], cmd.CommandPath(), cmd.CommandPath())}
			}
			return cmd.Help()
		}
	}
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			// -o/--output is checked before anything runs, for every verb
			// (a verb that prints no data refuses json and yaml).
			if _, err := outputFormat(cmd); err != nil {
				return err
			}
			if err := run(cmd, args); err != nil {
				return ranError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// isUsage reports whether err is a mistake on the command line.
func isUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	var re ranError
	return !errors.As(err, &re)
}

func exitCode(err error) int {
	if isUsage(err) {
		return 2
	}
	return 1
}

// formatError is the one line printed for err, returned by cmd (the command
// that ran, or the root when none was found).
func formatError(cmd *cobra.Command, err error) string {
	verb := ""
	if cmd != nil {
		verb = strings.TrimSpace(strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()))
	}
	code, msg := errorCode(err)
	if verb != "" {
		for {
			rest, ok := strings.CutPrefix(msg, verb+": ")
			if !ok {
				break
			}
			msg = rest
		}
		return "hsmgate: " + verb + ": " + code.String() + ": " + msg
	}
	return "hsmgate: " + code.String() + ": " + msg
}

// errorCode classifies err and returns its message: a status anywhere in
// the chain gives its code, and its text in err's text is replaced by its
// bare message (so wrapping context stays).
func errorCode(err error) (codes.Code, string) {
	msg := err.Error()
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if s := se.GRPCStatus(); s != nil && s.Code() != codes.OK {
			if full := s.Err().Error(); strings.Contains(msg, full) {
				msg = strings.Replace(msg, full, s.Message(), 1)
			}
			return s.Code(), msg
		}
	}
	switch {
	case isUsage(err):
		return codes.InvalidArgument, msg
	case errors.Is(err, fs.ErrNotExist):
		return codes.NotFound, msg
	case errors.Is(err, fs.ErrPermission):
		return codes.PermissionDenied, msg
	}
	if c := errs.Code(err); c != codes.Internal {
		return c, msg
	}
	return codes.Unknown, msg
}
