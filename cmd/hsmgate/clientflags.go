package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/hsmgate/hsmgate/client"
)

// clientFlags are the connection flags of every client verb. Each flag
// overrides its environment variable (see client.FromEnv).
type clientFlags struct {
	addr, caCert, token, clientCert, clientKey, serverName string
	timeout                                                time.Duration
}

// addClientFlags adds --addr, --cacert, --token, --client-cert, --client-key,
// --tls-server-name and --timeout to cmd.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	fs := cmd.Flags()
	fs.StringVar(&f.addr, "addr", "", "server gRPC address host:port (default $"+client.EnvAddr+", else "+client.DefaultAddr+")")
	fs.StringVar(&f.caCert, "cacert", "", "PEM file of the CA of the server certificate (default $"+client.EnvCACert+", else the system roots)")
	fs.StringVar(&f.token, "token", "", "bearer token (default $"+client.EnvToken+"; prefer the variable: flags show in ps)")
	fs.StringVar(&f.clientCert, "client-cert", "", "PEM client certificate for mTLS (default $"+client.EnvClientCert+")")
	fs.StringVar(&f.clientKey, "client-key", "", "PEM key of --client-cert (default $"+client.EnvClientKey+")")
	fs.StringVar(&f.serverName, "tls-server-name", "", "name to verify in the server certificate (default $"+client.EnvTLSServerName+", else the address's host)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline of each call")
	return f
}

// config merges the environment and the flags.
func (f *clientFlags) config() client.Options {
	c := client.FromEnv()
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.Addr, f.addr)
	set(&c.CACert, f.caCert)
	set(&c.Token, f.token)
	set(&c.ClientCert, f.clientCert)
	set(&c.ClientKey, f.clientKey)
	set(&c.ServerName, f.serverName)
	return c
}

// clientFor is the one server call of a verb: it makes a client.Client
// with the merged configuration, runs fn with a context bounded by
// --timeout, and closes the client. A verb is flags -> clientFor (a call of
// the public client package) -> output.print, so the CLI and every Go
// program that imports client/ share one code path.
func clientFor[R any](cmd *cobra.Command, f *clientFlags, fn func(context.Context, *client.Client) (R, error)) (R, error) {
	var zero R
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	o := f.config()
	o.Timeout = f.timeout
	c, err := client.New(ctx, o)
	if err != nil {
		return zero, err
	}
	defer c.Close()
	return fn(ctx, c)
}

// callFor is clientFor for the RPCs the client package has no helper for
// (key, role and issuer management): fn gets the generated stub made by
// newClient on the client's connection (same token, deadline, retries and
// error mapping).
func callFor[C, R any](cmd *cobra.Command, f *clientFlags, newClient func(grpc.ClientConnInterface) C, fn func(context.Context, C) (R, error)) (R, error) {
	return clientFor(cmd, f, func(ctx context.Context, c *client.Client) (R, error) {
		return fn(ctx, newClient(c.Conn()))
	})
}

// maxInput bounds what a verb reads from a file flag or stdin (a CSR, a
// certificate chain, a JWKS, a public key): far above any real one.
const maxInput = 1 << 20

// readInputFile reads the file a flag names, or stdin for "-", at most
// maxInput bytes. flag names the flag in errors.
func readInputFile(cmd *cobra.Command, flag, path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = cmd.InOrStdin()
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	if len(b) > maxInput {
		return nil, usageError{fmt.Errorf("--%s: more than %d bytes", flag, maxInput)}
	}
	return b, nil
}

// oneStdin refuses "-" (stdin) for more than one of the given flag values.
func oneStdin(flags map[string]string) error {
	var named []string
	for flag, v := range flags {
		if v == "-" {
			named = append(named, "--"+flag)
		}
	}
	if len(named) > 1 {
		sort.Strings(named)
		return usageError{fmt.Errorf("%s: only one may read stdin (-)", strings.Join(named, " and "))}
	}
	return nil
}
