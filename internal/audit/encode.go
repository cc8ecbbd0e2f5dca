package audit

import (
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// An Entry is encoded by hand, as encoding/json would encode it (the same
// members in the same order, the same escaping, the same numbers: a test
// holds the two equal), in two parts: the members between "seq" and "prev"
// are encoded by the caller's goroutine before it queues (encodeMiddle);
// the writer only frames them with the time, seq and prev (frame), under
// the lock. encoding/json's reflection cost about as much as the HMAC.

var errNotFinite = errors.New("latency is not a finite number")

// encodeMiddle appends the members of e from "type" to the comma before "prev".
func encodeMiddle(b []byte, e *Entry) ([]byte, error) {
	b = append(b, `"type":`...)
	b = appendString(b, e.Type)
	if e.RequestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, e.RequestID)
	}
	if id := e.Identity; id != nil {
		b = append(b, `,"identity":{"name":`...)
		b = appendString(b, id.Name)
		b = append(b, `,"kind":`...)
		b = appendString(b, id.Kind)
		if len(id.Policies) > 0 {
			b = append(b, `,"policies":[`...)
			for i, p := range id.Policies {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, p)
			}
			b = append(b, ']')
		}
		if id.Accessor != "" {
			b = append(b, `,"accessor":`...)
			b = appendString(b, id.Accessor)
		}
		b = append(b, '}')
	}
	if e.Remote != "" {
		b = append(b, `,"remote":`...)
		b = appendString(b, e.Remote)
	}
	b = append(b, `,"method":`...)
	b = appendString(b, e.Method)
	if e.Resource != "" {
		b = append(b, `,"resource":`...)
		b = appendString(b, e.Resource)
	}
	b = append(b, `,"items":`...)
	b = strconv.AppendInt(b, int64(e.Items), 10)
	if e.Code != "" {
		b = append(b, `,"code":`...)
		b = appendString(b, e.Code)
	}
	if e.LatencyMS != 0 {
		if math.IsNaN(e.LatencyMS) || math.IsInf(e.LatencyMS, 0) {
			return nil, errNotFinite
		}
		b = append(b, `,"latency_ms":`...)
		b = appendFloat(b, e.LatencyMS)
	}
	if len(e.Extra) > 0 {
		b = append(b, `,"extra":{`...)
		for i, k := range slices.Sorted(maps.Keys(e.Extra)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, e.Extra[k])
		}
		b = append(b, '}')
	}
	return append(b, ','), nil
}

// frame appends the whole line body: {"time":…,"seq":…,<middle>"prev":…}.
func frame(b []byte, t time.Time, seq uint64, middle []byte, prev string) ([]byte, error) {
	if y := t.Year(); y < 0 || y >= 10000 {
		return nil, errors.New("time year outside of range [0,9999]")
	}
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ',')
	b = append(b, middle...)
	b = append(b, `"prev":`...)
	b = appendString(b, prev)
	return append(b, '}'), nil
}

// appendFloat is encoding/json's float64 encoding.
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	fmt := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		fmt = 'e'
	}
	b = strconv.AppendFloat(b, f, fmt, -1, 64)
	if fmt == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString is encoding/json's string encoding (HTML characters escaped,
// invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
