package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README test: the fenced ```sh blocks of README.md are run, in order,
// against a dev server, as a reader would run them, so that the README
// cannot rot.
//
// A block that cannot run in a test (it serves until stopped, runs the test
// suite itself, or changes the machine: a real sshd, a real server) is
// preceded, as its last non-blank line before the fence, by
//
//	<!-- readme-test: skip: REASON -->
//
// Blocks fenced with another language (text, yaml) are not run.

// readmeSkip is the marker line; its group is the reason.
var readmeSkip = regexp.MustCompile(`^<!-- readme-test: skip: (.+) -->$`)

// readmeBlock is one fenced block of a Markdown file.
type readmeBlock struct {
	line int    // line of the opening fence (from 1)
	lang string // the fence's info string
	text string
	skip string // the reason, when marked
}

// readmeBlocks returns the fenced blocks of md. A skip marker that is not
// followed by a fence is an error, so that a marker cannot silently do
// nothing.
func readmeBlocks(md string) ([]readmeBlock, error) {
	var blocks []readmeBlock
	lines := strings.Split(md, "\n")
	pendingSkip, skipLine := "", 0
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := readmeSkip.FindStringSubmatch(l); m != nil {
			pendingSkip, skipLine = m[1], i+1
			continue
		}
		if strings.HasPrefix(l, "<!-- readme-test") {
			return nil, fmt.Errorf("line %d: malformed marker %q (want <!-- readme-test: skip: REASON -->)", i+1, l)
		}
		info, ok := strings.CutPrefix(l, "```")
		if !ok {
			if strings.TrimSpace(l) != "" && pendingSkip != "" {
				return nil, fmt.Errorf("line %d: skip marker not followed by a fenced block", skipLine)
			}
			continue
		}
		b := readmeBlock{line: i + 1, lang: strings.TrimSpace(info), skip: pendingSkip}
		pendingSkip = ""
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			return nil, fmt.Errorf("line %d: unclosed fence", b.line)
		}
		b.text = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
	}
	if pendingSkip != "" {
		return nil, fmt.Errorf("line %d: skip marker not followed by a fenced block", skipLine)
	}
	return blocks, nil
}

func TestReadmeBlocks(t *testing.T) {
	md := "x\n\n```sh\na\nb\n```\n<!-- readme-test: skip: forever -->\n```sh\nc\n```\n```text\nd\n```\n"
	got, err := readmeBlocks(md)
	if err != nil {
		t.Fatal(err)
	}
	want := []readmeBlock{{3, "sh", "a\nb\n", ""}, {8, "sh", "c\n", "forever"}, {11, "text", "d\n", ""}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{
		"<!-- readme-test: skip: x -->\ntext\n```sh\na\n```\n",
		"<!-- readme-test: skip -->\n```sh\na\n```\n",
		"```sh\na\n",
		"<!-- readme-test: skip: x -->\n",
	} {
		if _, err := readmeBlocks(bad); err == nil {
			t.Errorf("readmeBlocks(%q): got no error", bad)
		}
	}
}

// requireTool returns the path of a command the README uses; without it the
// test skips, except in CI, where it fails.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI (scripts/deps.sh installs it): %v", name, err)
	}
	t.Skipf("%s not installed", name)
	return ""
}

func TestREADME(t *testing.T) {
	requireSoftHSM(t)
	for _, tool := range []string{"bash", "go", "curl", "openssl", "ssh-keygen"} {
		requireTool(t, tool)
	}
	if grpcurlPath(t) == "" {
		t.Skip("grpcurl not installed (scripts/deps.sh installs it)")
	}
	md, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := readmeBlocks(string(md))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	var runs []readmeBlock
	sh, goBlocks := 0, 0
	for _, b := range blocks {
		if (b.lang == "sh" || b.lang == "go") && b.skip == "" {
			runs = append(runs, b)
		}
		switch {
		case b.skip != "":
		case b.lang == "sh":
			sh++
		case b.lang == "go":
			goBlocks++
		}
	}
	if sh < 8 {
		t.Fatalf("README.md: got %d runnable sh blocks, want the examples (8 or more)", sh)
	}
	if goBlocks < 1 {
		t.Fatalf("README.md: got no runnable go block, want the program of \"Use hsmgate from Go\"")
	}

	// The reader's directory: ./hsmgate, and the dev server's default state
	// ./.hsmgate-dev.
	work := t.TempDir()
	bin := filepath.Join(work, "hsmgate")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "HSMGATE_") || name == "SOFTHSM2_CONF" || name == "XDG_STATE_HOME" {
			continue
		}
		env = append(env, kv)
	}
	dev := exec.Command(bin, "dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	dev.Dir, dev.Env = work, env
	p := startDevCmd(t, dev)
	if _, err := os.Stat(filepath.Join(work, devStateDir, devFileEnv)); err != nil {
		t.Fatalf("the dev server's env file: %v", err)
	}

	for _, b := range runs {
		// A hang guard, not a timed assertion.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		script := b.text
		if b.lang == "go" {
			// A program of its own module, requiring the client as a reader's would.
			script = "cd " + readmeGoModule(t, work, b) + " && export GOFLAGS=-mod=mod GOWORK=off && go mod tidy && go run .\n"
		}
		c := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", ". ./"+devStateDir+"/"+devFileEnv+"\n"+script)
		c.Dir, c.Env = work, env
		c.WaitDelay = 10 * time.Second
		out, err := c.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("README.md:%d: the block failed: %v\n--- block\n%s--- output\n%s--- dev server stderr\n%s", b.line, err, b.text, out, p.stderr)
		}
		if b.lang == "go" && !strings.Contains(string(out), "4111111111111111") {
			t.Fatalf("README.md:%d: the Go program did not print the decrypted card number:\n%s", b.line, out)
		}
		t.Logf("README.md:%d: ok\n%s", b.line, out)
	}
	p.stop(t)
}

// readmeGoModule writes the go block b as main.go of a module under work
// that requires the client and proto modules of this repository (replaced
// by their directories, go.sum the client's), and returns its directory.
func readmeGoModule(t *testing.T, work string, b readmeBlock) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, fmt.Sprintf("readme-go-%d", b.line))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "client", "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module example.com/readme\n\ngo 1.26\n\nrequire (\n" +
		"\tgithub.com/hsmgate/hsmgate/client v0.0.0-00010101000000-000000000000\n" +
		"\tgithub.com/hsmgate/hsmgate/proto v0.0.0-00010101000000-000000000000\n)\n\n" +
		"replace github.com/hsmgate/hsmgate/client => " + filepath.Join(root, "client") + "\n" +
		"replace github.com/hsmgate/hsmgate/proto => " + filepath.Join(root, "proto") + "\n"
	for name, data := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": []byte(b.text)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// mdLink is a Markdown link or image target.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocLinksStayInRepo: every link in the repository's Markdown files
// points at a file of the repository (no URL, no path outside it), and no
// document or doc comment refers to the design notes outside the
// repository (the sibling shared folder of the workplace).
func TestDocLinksStayInRepo(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	mds := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		isMD := strings.HasSuffix(path, ".md")
		if !isMD && (!strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, outside := range []string{".." + "/shared/", "/work" + "/shared"} {
			if strings.Contains(string(b), outside) {
				t.Errorf("%s: refers to %s, outside the repository (use docs/architecture.md)", rel, outside)
			}
		}
		if !isMD {
			return nil
		}
		mds++
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.HasPrefix(target, "#") {
				continue
			}
			if regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`).MatchString(target) {
				t.Errorf("%s: link %q leaves the repository", rel, target)
				continue
			}
			file, _, _ := strings.Cut(target, "#")
			abs := filepath.Join(filepath.Dir(path), file)
			if r, err := filepath.Rel(root, abs); err != nil || r == ".." || strings.HasPrefix(r, "../") {
				t.Errorf("%s: link %q leaves the repository", rel, target)
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s: link %q: %v", rel, target, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if mds < 3 {
		t.Errorf("got %d Markdown files, want README.md, bench/README.md, docs/architecture.md and more", mds)
	}
}

// TestReadmeOneForm: every command in the README's sh blocks (run or
// skipped) calls the binary as ./hsmgate, which scripts/dev.sh builds, never
// a bare hsmgate that is not on PATH; and each parses (see
// TestHelpExamplesParse).
func TestReadmeOneForm(t *testing.T) {
	md, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := readmeBlocks(string(md))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range blocks {
		if b.lang != "sh" {
			continue
		}
		cmds, err := shellCommands(b.text)
		if err != nil {
			t.Errorf("README.md:%d: %v", b.line, err)
			continue
		}
		for _, ws := range cmds {
			switch ws[0] {
			case "hsmgate":
				t.Errorf("README.md:%d: bare hsmgate in %q: write ./hsmgate", b.line, strings.Join(ws, " "))
			case "./hsmgate":
				n++
				root := newRootCmd(io.Discard, io.Discard)
				c, rest, err := root.Find(ws[1:])
				if err == nil && c != root {
					err = c.ParseFlags(rest)
				}
				if err != nil || c == root {
					t.Errorf("README.md:%d: %q: got %v, want a command that parses", b.line, strings.Join(ws, " "), err)
				}
			}
		}
	}
	if n < 30 {
		t.Errorf("got %d ./hsmgate commands in the README, want its examples (30 or more)", n)
	}
}
