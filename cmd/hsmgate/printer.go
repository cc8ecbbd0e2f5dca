package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

// The one printer of the CLI. Every verb that prints data takes the root's
// persistent -o/--output table|json|yaml (--json is -o json):
//
//   - table (the default) is the verb's human form: a summary, a list, a PEM
//     block, the raw plaintext, a ciphertext line;
//   - json is one JSON document on stdout: the server's response message as
//     protojson (lowerCamelCase names, bytes in base64, zero values shown,
//     ciphertexts in the text form hsmgate:v<N>:<base64>), or for a local
//     verb (audit verify, ssh krl --show) an object of the same style;
//   - yaml is the same document as YAML.
//
// A verb says it prints data by calling addOutput in its constructor; -o json
// or yaml on a verb that does not (server, dev, init, bench, completion,
// token root) is a mistake on the command line (exit 2), never silently
// ignored. bench keeps its own --json FILE (the result file), which hides
// the global --json there.

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

// outputAnnotation marks a command that takes -o.
const outputAnnotation = "hsmgate/output"

// addOutputFlags adds the persistent -o/--output and --json to root.
func addOutputFlags(root *cobra.Command) {
	fs := root.PersistentFlags()
	fs.StringP("output", "o", formatTable, "output format of the verbs that print data: table, json or yaml")
	fs.Bool("json", false, "print JSON (the same as -o json)")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{formatTable, formatJSON, formatYAML}, cobra.ShellCompDirectiveNoFileComp
	})
}

// outputFormat returns the format the flags of cmd ask for, checked: a
// usage error for an unknown format, for --json with another -o, and for
// json or yaml on a verb that does not print data.
func outputFormat(cmd *cobra.Command) (string, error) {
	format := formatTable
	if f := cmd.Flags().Lookup("output"); f != nil && f.Value.Type() == "string" {
		format = strings.ToLower(f.Value.String())
	}
	switch format {
	case formatTable, formatJSON, formatYAML:
	default:
		return "", usageError{fmt.Errorf("--output %q: want table, json or yaml", format)}
	}
	if f := cmd.Flags().Lookup("json"); f != nil && f.Value.Type() == "bool" && f.Value.String() == "true" {
		if o := cmd.Flags().Lookup("output"); o != nil && o.Changed && format != formatJSON {
			return "", usageError{fmt.Errorf("--json and --output %s: give one", format)}
		}
		format = formatJSON
	}
	if format != formatTable && cmd.Annotations[outputAnnotation] == "" {
		return "", usageError{fmt.Errorf("--output %s: %s prints no data (only table)", format, cmd.CommandPath())}
	}
	return format, nil
}

// output prints the data of one verb in the format its flags ask for.
type output struct{ cmd *cobra.Command }

// addOutput marks cmd as a verb that prints data (it takes -o json|yaml).
func addOutput(cmd *cobra.Command) *output {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[outputAnnotation] = "yes"
	return &output{cmd: cmd}
}

// table reports whether the human form is asked for.
func (o *output) table() bool {
	f, err := outputFormat(o.cmd)
	return err != nil || f == formatTable
}

// print writes v in the asked format: table calls table with stdout; json
// and yaml marshal v (a proto.Message, a json.RawMessage, or a value for
// encoding/json).
func (o *output) print(v any, table func(w io.Writer) error) error {
	w := o.cmd.OutOrStdout()
	format, err := outputFormat(o.cmd)
	if err != nil {
		return err
	}
	if format == formatTable {
		return table(w)
	}
	b, err := marshalJSON(v)
	if err != nil {
		return err
	}
	return writeDocument(w, format, b)
}

// marshalJSON is v as JSON: protojson for a message (zero values shown, so
// that `jq -e .hsm.reachable` works), as is for raw JSON.
func marshalJSON(v any) ([]byte, error) {
	switch m := v.(type) {
	case proto.Message:
		return protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	case json.RawMessage:
		return m, nil
	default:
		return json.Marshal(v)
	}
}

// writeDocument writes the JSON document b as indented JSON, or as YAML
// with the keys in the same order.
func writeDocument(w io.Writer, format string, b []byte) error {
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if format == formatYAML {
		y, err := jsonToYAML(compact.Bytes())
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// jsonToYAML converts a JSON document to block-style YAML, keeping the
// order of the keys and the type of each scalar (a string "true" stays a
// quoted string).
func jsonToYAML(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	doc, err := yamlNode(dec)
	if err != nil {
		return nil, fmt.Errorf("output: yaml: %w", err)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("output: yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("output: yaml: %w", err)
	}
	return out.Bytes(), nil
}

// yamlNode reads one JSON value from dec as a YAML node.
func yamlNode(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if v == '{' {
			n.Kind, n.Tag = yaml.MappingNode, "!!map"
		}
		for dec.More() {
			if n.Kind == yaml.MappingNode {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, _ := k.(string)
				n.Content = append(n.Content, yamlString(key))
			}
			c, err := yamlNode(dec)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		if len(n.Content) == 0 {
			n.Style = yaml.FlowStyle // [] and {}
		}
		return n, nil
	case string:
		return yamlString(v), nil
	case json.Number:
		tag := "!!float"
		if _, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			tag = "!!int"
		} else if _, err := strconv.ParseUint(v.String(), 10, 64); err == nil {
			tag = "!!int"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v.String()}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(v)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// yamlString is a string scalar; the encoder quotes it where it would read
// as another type.
func yamlString(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if !literalSafe(s) {
		// The encoder would write a literal block (|) that reads back
		// otherwise (yaml.v3 loses a lone "\n", for one).
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

// printLines writes each line followed by a newline: the table of a list of
// names.
func printLines(w io.Writer, lines []string) error {
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}

// namesDoc is a list of names as JSON: {"names": [...]}, the shape of the
// List*Response messages.
type namesDoc struct {
	Names []string `json:"names"`
}

// emptyDoc is the JSON of a verb whose response carries nothing: {}.
type emptyDoc struct{}

// literalSafe reports whether a string may be left to the YAML encoder: one
// line, or lines that start with text (a PEM block, a policy file).
func literalSafe(s string) bool {
	if !strings.Contains(s, "\n") {
		return true
	}
	if s == "" || strings.ContainsAny(s[:1], " \t\n") || strings.ContainsAny(s, "\r\t") {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if l == "" || strings.TrimRight(l, " ") != l || strings.HasPrefix(l, " ") {
			return false
		}
	}
	return true
}
