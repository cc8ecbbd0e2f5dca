package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/client"
)

// shellCommands returns the simple commands of a shell script, as words:
// operators (| || && ; &) and newlines end a command, leading VAR=value
// assignments and redirections are dropped, comments are skipped, and the
// commands inside $(...) (also within double quotes) are returned too,
// before the command they are in, the substitution itself standing as the
// word "1". It knows just enough shell for
// help examples.
func shellCommands(script string) ([][]string, error) {
	var cmds [][]string
	var words []string
	var word strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	endCmd := func() {
		endWord()
		if len(words) > 0 {
			cmds = append(cmds, words)
		}
		words = nil
	}
	// substitution reads $( ... ) from i (at '$'), returns its end and
	// adds its commands.
	substitution := func(s string, i int) (int, error) {
		depth := 0
		for j := i + 1; j < len(s); j++ {
			switch s[j] {
			case '(':
				depth++
			case ')':
				depth--
				if depth == 0 {
					inner, err := shellCommands(s[i+2 : j])
					if err != nil {
						return 0, err
					}
					cmds = append(cmds, inner...)
					return j, nil
				}
			}
		}
		return 0, errors.New("unclosed $(")
	}
	s := script
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] == '\n':
			i++
		case c == '#' && !inWord:
			for i < len(s) && s[i] != '\n' {
				i++
			}
			endCmd()
		case c == '\n' || c == ';' || c == '|' || c == '&':
			if c == '|' && len(words) == 0 && !inWord {
				continue // a pipe continued from the previous line
			}
			endCmd()
		case c == ' ' || c == '\t':
			endWord()
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unclosed '")
			}
			word.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			inWord = true
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '$' && i+1 < len(s) && s[i+1] == '(' {
					end, err := substitution(s, i)
					if err != nil {
						return nil, err
					}
					word.WriteString("1")
					i = end
					continue
				}
				word.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New(`unclosed "`)
			}
		case c == '$' && i+1 < len(s) && s[i+1] == '(':
			end, err := substitution(s, i)
			if err != nil {
				return nil, err
			}
			word.WriteString("1")
			inWord = true
			i = end
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	endCmd()
	// Drop assignments and redirections.
	var out [][]string
	for _, ws := range cmds {
		for len(ws) > 0 && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(ws[0]) {
			ws = ws[1:]
		}
		var kept []string
		for k := 0; k < len(ws); k++ {
			w := ws[k]
			if m := regexp.MustCompile(`^[0-9]*(>>|>|<)(.*)$`).FindStringSubmatch(w); m != nil {
				if m[2] == "" {
					k++ // the target is the next word
				}
				continue
			}
			kept = append(kept, w)
		}
		if len(kept) > 0 {
			out = append(out, kept)
		}
	}
	return out, nil
}

func TestShellCommands(t *testing.T) {
	got, err := shellCommands(`echo -n hi | hsmgate transit encrypt k1 --aad $(echo -n x | base64) > out  # comment
  eval "$(hsmgate dev --print-env)"; HSMGATE_X=1 hsmgate status --json
  echo '{"a":
     1}' |
    hsmgate ssh role write eng -f -`)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"echo", "-n", "hi"}, {"echo", "-n", "x"}, {"base64"},
		{"hsmgate", "transit", "encrypt", "k1", "--aad", "1"},
		{"hsmgate", "dev", "--print-env"}, {"eval", "1"}, {"hsmgate", "status", "--json"},
		{"echo", "{\"a\":\n     1}"}, {"hsmgate", "ssh", "role", "write", "eng", "-f", "-"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// helpExamples returns every hsmgate command line in the help texts: all of
// each Example, and the lines of each Long indented by two spaces or more
// (the code in them).
func helpExamples(t *testing.T) map[string][][]string {
	t.Helper()
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	found := map[string][][]string{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		var scripts []string
		if c.Example != "" {
			scripts = append(scripts, c.Example)
		}
		for _, l := range strings.Split(c.Long, "\n") {
			if strings.HasPrefix(l, "  ") && strings.Contains(l, "hsmgate ") {
				scripts = append(scripts, l)
			}
		}
		for _, s := range scripts {
			cmds, err := shellCommands(s)
			if err != nil {
				t.Errorf("%s: help example %q: %v", c.CommandPath(), s, err)
				continue
			}
			for _, ws := range cmds {
				if ws[0] == "hsmgate" {
					found[c.CommandPath()] = append(found[c.CommandPath()], ws[1:])
				}
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return found
}

// TestHelpExamplesParse: every hsmgate command line in a help text names a
// real command, with flags it has, the number of arguments it takes and its
// required flags. (What they do against a server is the README test's and
// the engines' tests' business; this keeps the texts from drifting.)
func TestHelpExamplesParse(t *testing.T) {
	examples := helpExamples(t)
	n := 0
	for where, list := range examples {
		for _, args := range list {
			n++
			t.Run(where+": hsmgate "+strings.Join(args, " "), func(t *testing.T) {
				root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
				c, rest, err := root.Find(args)
				if err != nil {
					t.Fatalf("got %v, want a command", err)
				}
				if c == root || c.HasSubCommands() {
					t.Fatalf("got no verb for %q (%s is a group)", args, c.CommandPath())
				}
				if err := c.ParseFlags(rest); err != nil {
					t.Fatalf("flags: %v", err)
				}
				if c.Flags().Changed("help") {
					return
				}
				if !c.Runnable() {
					t.Fatalf("%s is not runnable", c.CommandPath())
				}
				if err := c.ValidateArgs(c.Flags().Args()); err != nil {
					t.Errorf("arguments: %v", err)
				}
				if err := c.ValidateRequiredFlags(); err != nil {
					t.Errorf("flags: %v", err)
				}
				if err := c.ValidateFlagGroups(); err != nil {
					t.Errorf("flags: %v", err)
				}
			})
		}
	}
	if n < 40 {
		t.Errorf("got %d example command lines, want the help texts' (40 or more)", n)
	}
	// The example that used to hang: dev serves until stopped, so a help
	// text may only substitute its --print-env form.
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	subst := regexp.MustCompile(`\$\(hsmgate dev\b[^)]*\)`)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, m := range subst.FindAllString(c.Long+"\n"+c.Example, -1) {
			if !strings.Contains(m, "--print-env") {
				t.Errorf("%s: help substitutes %q, which never returns", c.CommandPath(), m)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	st, _, _ := root.Find([]string{"status"})
	if !strings.Contains(st.Example, `eval "$(hsmgate dev --print-env)"`) {
		t.Errorf("status example: got %q, want the --print-env form", st.Example)
	}
}

// TestVersionFlagEqualsVersionCmd: `hsmgate version` and `hsmgate --version`
// print the same text.
func TestVersionFlagEqualsVersionCmd(t *testing.T) {
	a, _, err1 := execRoot(t, "version")
	b, _, err2 := execRoot(t, "--version")
	if err1 != nil || err2 != nil || a != b || !strings.HasPrefix(a, "hsmgate ") {
		t.Errorf("version: %q (%v); --version: %q (%v); want the same line", a, err1, b, err2)
	}
}

// TestRootHelpListsEveryVariable: every HSMGATE_* name in the code (outside
// tests) is explained in `hsmgate --help`.
func TestRootHelpListsEveryVariable(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	re := regexp.MustCompile(`HSMGATE_[A-Z0-9_]*[A-Z0-9]`)
	names := map[string]string{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "../.." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllString(string(b), -1) {
			names[m] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("found %d variables in the code, want 10 or more: %v", len(names), names)
	}
	for name, where := range names {
		if !regexp.MustCompile(`(?m)^  ` + name + `\s`).MatchString(root.Long) {
			t.Errorf("%s (used in %s) is not listed in the root help", name, where)
		}
	}
}

// TestInitHasNoListenFlags: init listens on nothing, so it offers no
// listen flags; server keeps them.
func TestInitHasNoListenFlags(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	for _, tc := range []struct {
		verb string
		want bool
	}{{"init", false}, {"server", true}} {
		c, _, _ := root.Find([]string{tc.verb})
		for _, f := range []string{"grpc-addr", "http-addr"} {
			if got := c.Flags().Lookup(f) != nil; got != tc.want {
				t.Errorf("%s --%s: got present=%v, want %v", tc.verb, f, got, tc.want)
			}
		}
	}
	_, _, err := execRoot(t, "init", "--config", "x.yaml", "--grpc-addr", "127.0.0.1:1")
	if err == nil || exitCode(err) != 2 {
		t.Errorf("init --grpc-addr: got %v, want a usage error", err)
	}
}

func TestFormatError(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	find := func(args ...string) *cobra.Command {
		c, _, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rpc := status.Error(codes.NotFound, `pki: role not found: "web"`)
	tests := []struct {
		name string
		cmd  *cobra.Command
		err  error
		want string
		exit int
	}{
		{"status from the server", find("pki", "issue"), ranError{fmt.Errorf("pki issue: %w", rpc)},
			`hsmgate: pki issue: NotFound: pki: role not found: "web"`, 1},
		{"status with context kept", find("ssh", "role", "write"), ranError{fmt.Errorf("ssh role write: reading eng: %w", rpc)},
			`hsmgate: ssh role write: NotFound: reading eng: pki: role not found: "web"`, 1},
		{"transit item", find("transit", "encrypt"), ranError{transitItemError("encrypt", client.FromStatus(status.New(codes.InvalidArgument, "transit: bad")))},
			"hsmgate: transit encrypt: InvalidArgument: transit: bad", 1},
		{"usage error in the command", find("transit", "encrypt"), ranError{usageError{errors.New("--aad: not base64")}},
			"hsmgate: transit encrypt: InvalidArgument: --aad: not base64", 2},
		{"cobra's own error", find("status"), errors.New("unknown flag: --bogus"),
			"hsmgate: status: InvalidArgument: unknown flag: --bogus", 2},
		{"missing file", find("audit", "verify"), ranError{fmt.Errorf("audit verify: %w", &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist})},
			"hsmgate: audit verify: NotFound: open /x: file does not exist", 1},
		{"unclassified", find("status"), ranError{errors.New("boom")}, "hsmgate: status: Unknown: boom", 1},
		{"no verb", root, errors.New(`unknown command "x" for "hsmgate"`), `hsmgate: InvalidArgument: unknown command "x" for "hsmgate"`, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatError(tc.cmd, tc.err); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			if got := exitCode(tc.err); got != tc.exit {
				t.Errorf("exit: got %d, want %d", got, tc.exit)
			}
		})
	}
}

// TestUnknownVerbInGroup: a misspelled verb under a group fails as a usage
// error instead of printing the group's help and exiting 0.
func TestUnknownVerbInGroup(t *testing.T) {
	for _, tc := range []struct {
		args []string
		verb string
	}{
		{[]string{"transit", "encrytp"}, "encrytp"},
		{[]string{"pki", "issuer", "bogus"}, "bogus"},
		{[]string{"ssh", "role", "wirte", "x"}, "wirte"},
	} {
		_, _, err := execRoot(t, tc.args...)
		if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), fmt.Sprintf("unknown command %q", tc.verb)) {
			t.Errorf("hsmgate %v: got %v, want a usage error naming %q", tc.args, err, tc.verb)
		}
	}
	out, _, err := execRoot(t, "transit")
	if err != nil || !strings.Contains(out, "Available Commands:") {
		t.Errorf("hsmgate transit: got %v, %q; want its help", err, out)
	}
}
