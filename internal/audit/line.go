package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
	"time"
)

// A line is a JSON object whose last member is "mac": the hex HMAC-SHA256,
// under the chain key, of the line without that member (the same bytes with
// `,"mac":"…"` cut out). The mac is the line's hash in the chain: the next
// line's "prev". Because "prev" is inside the MAC'd bytes, each MAC covers the
// whole chain before it.

const (
	macPrefix = `,"mac":"`
	macHexLen = 64
	macSuffix = `"}`
	macTail   = len(macPrefix) + macHexLen + len(macSuffix)
	// maxLine bounds one line, for readers (Verify, the tail read on Open).
	maxLine = 1 << 20
)

// FormatV2 is the "format" of a file header: keyed chain, one header per file.
const FormatV2 = "hsmgate-audit/2 hmac-sha256"

// The types of a line: the first line of every file, and the lines of
// requests (see the package doc).
const (
	TypeHeader   = "header"
	TypeRequest  = "request"  // before the handler of a call that may change state
	TypeResponse = "response" // after it, with the status and latency; or a refusal
	TypeCall     = "call"     // the one line of a read-only call, after its handler
)

// header is the first line of every file. It is a chained line like any other
// (it has a seq); it names the previous file and that file's last seq, and
// repeats the chain's id, so a file from another chain, a missing file or a
// file whose first lines were cut shows.
type header struct {
	Time    time.Time `json:"time"`
	Seq     uint64    `json:"seq"`
	Type    string    `json:"type"`
	Format  string    `json:"format"`
	ChainID string    `json:"chain_id"`
	// PrevFile is the base name of the previous file ("" at the chain's start).
	PrevFile string `json:"prev_file,omitempty"`
	PrevSeq  uint64 `json:"prev_seq"`
	// PrevTorn is the length of a partial last line (a crash mid-write) that
	// ends the previous file; Verify accepts exactly that.
	PrevTorn int    `json:"prev_torn,omitempty"`
	Prev     string `json:"prev"`
}

// fields are what Verify and Open read from any line.
type fields struct {
	Seq      uint64 `json:"seq"`
	Type     string `json:"type"`
	Prev     string `json:"prev"`
	Format   string `json:"format"`
	ChainID  string `json:"chain_id"`
	PrevFile string `json:"prev_file"`
	PrevSeq  uint64 `json:"prev_seq"`
	PrevTorn int    `json:"prev_torn"`
	MAC      string `json:"mac"`
}

// seal appends the mac member to body (a JSON object) and returns the line
// (with room for a newline) and its mac.
func seal(key, body []byte) ([]byte, string) {
	return sealWith(hmac.New(sha256.New, key), body)
}

// sealWith is seal with a reusable HMAC (reset here).
func sealWith(m hash.Hash, body []byte) ([]byte, string) {
	return appendSeal(make([]byte, 0, len(body)+macTail+1), m, body)
}

// appendSeal appends the sealed line (without a newline) to dst and returns
// it with the line's mac; m is reset here.
func appendSeal(dst []byte, m hash.Hash, body []byte) ([]byte, string) {
	m.Reset()
	m.Write(body)
	var sum [sha256.Size]byte
	dst = append(dst, body[:len(body)-1]...)
	dst = append(dst, macPrefix...)
	dst = hex.AppendEncode(dst, m.Sum(sum[:0]))
	hx := string(dst[len(dst)-macHexLen:])
	return append(dst, macSuffix...), hx
}

// unseal splits a line into the MAC'd body and the mac. ok is false when the
// line does not end with a well-formed mac member.
func unseal(line []byte) (body []byte, sum string, ok bool) {
	if len(line) < macTail+2 || line[0] != '{' {
		return nil, "", false
	}
	tail := line[len(line)-macTail:]
	if !bytes.HasPrefix(tail, []byte(macPrefix)) || !bytes.HasSuffix(tail, []byte(macSuffix)) {
		return nil, "", false
	}
	hx := tail[len(macPrefix) : len(macPrefix)+macHexLen]
	for _, c := range hx {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, "", false
		}
	}
	body = make([]byte, 0, len(line)-macTail+1)
	body = append(body, line[:len(line)-macTail]...)
	body = append(body, '}')
	return body, string(hx), true
}

// checkMAC reports whether sum is the MAC of body under key (constant time).
func checkMAC(key, body []byte, sum string) bool {
	want, err := hex.DecodeString(sum)
	return err == nil && hmac.Equal(mac(key, body), want)
}

// parse reads a line's fields; key nil skips the MAC check. It returns the
// fields (f.MAC is the line's hash) and "" or the problem.
func parse(key, line []byte) (f fields, problem string) {
	body, sum, ok := unseal(line)
	if !ok {
		return f, Malformed
	}
	if key != nil && !checkMAC(key, body, sum) {
		return f, Changed
	}
	if err := json.Unmarshal(body, &f); err != nil || f.Seq == 0 || f.MAC != "" {
		return f, Malformed
	}
	f.MAC = sum
	return f, ""
}
