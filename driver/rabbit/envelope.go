package rabbit

import (
	"bytes"
	"compress/bzip2"
	"compress/zlib"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oslogo/oslogo/driver"
)

// Wire constants of oslo.messaging's message format 2.0.
const (
	envelopeVersion = "2.0"
	contentType     = "application/json"
	contentEncoding = "utf-8"
	contextPrefix   = "_context_"
	compressZlib    = "application/x-gzip" // kombu's name; the data is zlib (RFC 1950)
	compressBzip2   = "application/x-bz2"
)

// maxBodySize bounds a decompressed body, so a small compressed message
// cannot expand without limit.
const maxBodySize = 256 << 20

// errMalformed marks a message that cannot be decoded; it is rejected
// without requeue, as oslo does.
var errMalformed = errors.New("rabbit: malformed message")

// idSources hands out ChaCha8 generators seeded from crypto/rand: a
// publish takes two or three ids, and a getrandom system call for each
// showed in profiles; ChaCha8 is a cryptographically strong generator.
var idSources = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	return mrand.NewChaCha8(seed)
}}

// newHexID returns uuid4().hex: 32 lower-case hex digits.
func newHexID() string {
	var b [16]byte
	src := idSources.Get().(*mrand.ChaCha8)
	_, _ = src.Read(b[:])
	idSources.Put(src)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

// NewMessageID returns str(uuid4()): the dashed form oslo uses for
// notification message_id.
func NewMessageID() string {
	h := newHexID()
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// PythonTimestamp formats t as Python's str(datetime.utcnow()): a space
// separator and no fraction when the microseconds are zero.
func PythonTimestamp(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02 15:04:05")
	}
	return t.Format("2006-01-02 15:04:05.000000")
}

// innerBufs holds the buffers requests and replies are built in before
// envelope copies them: one allocation less per message.
var innerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// sealed wraps inner, built in the pooled buffer bp, in the envelope and
// gives the buffer back (unless it grew large, not to pin big messages).
func sealed(bp *[]byte, inner []byte) []byte {
	out := envelope(inner)
	if cap(inner) <= 64<<10 {
		*bp = inner[:0]
		innerBufs.Put(bp)
	}
	return out
}

// envelope wraps an inner message (ASCII JSON) in the 2.0 envelope.
func envelope(inner []byte) []byte {
	// Every quote of the inner JSON gets a backslash: room for a third of
	// them, so that the usual message is written without growing out.
	out := make([]byte, 0, len(inner)+len(inner)/3+48)
	out = append(out, `{"oslo.version": "2.0", "oslo.message": `...)
	out = appendPyString(out, inner)
	return append(out, '}')
}

func appendKey(dst []byte, first bool, key string) []byte {
	if !first {
		dst = append(dst, ',', ' ')
	}
	dst = appendPyString(dst, key)
	return append(dst, ':', ' ')
}

// appendContext writes the flattened _context_* keys, sorted for
// determinism (order is irrelevant to parsers).
func appendContext(dst []byte, ctx map[string]any) ([]byte, error) {
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		dst = appendKey(dst, false, contextPrefix+k)
		var ok bool
		if dst, ok = appendPyScalar(dst, ctx[k]); ok {
			continue
		}
		v, err := pyMarshalSlow(ctx[k])
		if err != nil {
			return dst, fmt.Errorf("rabbit: context key %q: %w", k, err)
		}
		dst = append(dst, v...)
	}
	return dst, nil
}

// callInfo is what a call adds to a request.
type callInfo struct {
	msgID   string
	replyQ  string
	monitor time.Duration // call-monitor timeout; 0 writes null
}

// encodeRequest builds the enveloped body of an RPC request, with the keys
// in Python's order.
func encodeRequest(req *driver.Request, call *callInfo, uniqueID string) ([]byte, error) {
	bp := innerBufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, '{')
	b = appendKey(b, true, "method")
	b = appendPyString(b, req.Method)
	b = appendKey(b, false, "args")
	if len(bytes.TrimSpace(req.Args)) == 0 {
		b = append(b, '{', '}')
	} else {
		args := bytes.TrimSpace(req.Args)
		if args[0] != '{' {
			return nil, errors.New("rabbit: request args must be a JSON object")
		}
		var err error
		if b, err = appendPyJSON(b, args); err != nil {
			return nil, err
		}
	}
	if req.Namespace != "" {
		b = appendKey(b, false, "namespace")
		b = appendPyString(b, req.Namespace)
	}
	if req.Version != "" {
		b = appendKey(b, false, "version")
		b = appendPyString(b, req.Version)
	}
	if call != nil {
		b = appendKey(b, false, "_msg_id")
		b = appendPyString(b, call.msgID)
		b = appendKey(b, false, "_reply_q")
		b = appendPyString(b, call.replyQ)
		b = appendKey(b, false, "_timeout")
		if call.monitor > 0 {
			b = append(b, pyFloatSeconds(call.monitor.Seconds())...)
		} else {
			b = append(b, "null"...)
		}
	}
	b = appendKey(b, false, "_unique_id")
	b = appendPyString(b, uniqueID)
	b, err := appendContext(b, req.Context)
	if err != nil {
		return nil, err
	}
	b = append(b, '}')
	return sealed(bp, b), nil
}

// encodeFailure serialises a failure as oslo does: a JSON object that the
// reply then carries as a string.
func encodeFailure(f *driver.Failure) ([]byte, error) {
	tb := f.Traceback
	if tb == nil {
		tb = []string{}
	}
	args := f.Args
	if args == nil {
		args = []any{}
	}
	kwargs := f.Kwargs
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	b := []byte{'{'}
	b = appendKey(b, true, "class")
	b = appendPyString(b, f.Class)
	b = appendKey(b, false, "module")
	b = appendPyString(b, f.Module)
	b = appendKey(b, false, "message")
	b = appendPyString(b, f.Message)
	for _, kv := range []struct {
		k string
		v any
	}{{"tb", tb}, {"args", args}, {"kwargs", kwargs}} {
		v, err := pyMarshal(kv.v)
		if err != nil {
			return nil, fmt.Errorf("rabbit: failure %s: %w", kv.k, err)
		}
		b = appendKey(b, false, kv.k)
		b = append(b, v...)
	}
	return append(b, '}'), nil
}

// encodeReply builds an enveloped reply; r == nil with ending false is a
// call-monitor heartbeat.
func encodeReply(r *driver.Reply, ending bool, msgID, uniqueID string) ([]byte, error) {
	bp := innerBufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, '{')
	b = appendKey(b, true, "result")
	var failure []byte
	if r != nil && r.Failure != nil {
		var err error
		if failure, err = encodeFailure(r.Failure); err != nil {
			return nil, err
		}
		b = append(b, "null"...)
	} else if r != nil && len(bytes.TrimSpace(r.Result)) > 0 {
		var err error
		if b, err = appendPyJSON(b, r.Result); err != nil {
			return nil, err
		}
	} else {
		b = append(b, "null"...)
	}
	b = appendKey(b, false, "failure")
	if failure != nil {
		b = appendPyString(b, failure)
	} else {
		b = append(b, "null"...)
	}
	b = appendKey(b, false, "ending")
	b = strconv.AppendBool(b, ending)
	b = appendKey(b, false, "_msg_id")
	b = appendPyString(b, msgID)
	b = appendKey(b, false, "_unique_id")
	b = appendPyString(b, uniqueID)
	b = append(b, '}')
	return sealed(bp, b), nil
}

// encodeNotification builds a notification body: the raw dict of the
// "messaging" driver, or the 2.0 envelope of "messagingv2".
func encodeNotification(n *driver.Notification, enveloped bool, uniqueID string) ([]byte, error) {
	b := make([]byte, 0, 256+len(n.Payload))
	b = append(b, '{')
	b = appendKey(b, true, "message_id")
	b = appendPyString(b, n.MessageID)
	b = appendKey(b, false, "publisher_id")
	b = appendPyString(b, n.PublisherID)
	b = appendKey(b, false, "event_type")
	b = appendPyString(b, n.EventType)
	b = appendKey(b, false, "priority")
	b = appendPyString(b, strings.ToUpper(n.Priority))
	b = appendKey(b, false, "payload")
	var err error
	if b, err = appendPyJSON(b, n.Payload); err != nil {
		return nil, err
	}
	b = appendKey(b, false, "timestamp")
	b = appendPyString(b, n.Timestamp)
	b = appendKey(b, false, "_unique_id")
	b = appendPyString(b, uniqueID)
	if b, err = appendContext(b, n.Context); err != nil {
		return nil, err
	}
	b = append(b, '}')
	if enveloped {
		return envelope(b), nil
	}
	return b, nil
}

// message is a decoded oslo message dict, values still raw JSON.
type message map[string]json.RawMessage

// decodeBody turns an AMQP body into the oslo message dict: it checks the
// content type, undoes kombu compression, and unwraps a 2.0 envelope (a
// body without both envelope keys is a legacy 1.0 dict, used as is).
func decodeBody(ctype string, headers map[string]any, body []byte) (message, error) {
	if ctype != contentType {
		return nil, fmt.Errorf("%w: content type %q, want %s", errMalformed, ctype, contentType)
	}
	if c, ok := headers["compression"].(string); ok && c != "" {
		var r io.Reader
		switch c {
		case compressZlib:
			zr, err := zlib.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, fmt.Errorf("%w: %v", errMalformed, err)
			}
			r = zr
		case compressBzip2:
			r = bzip2.NewReader(bytes.NewReader(body))
		default:
			return nil, fmt.Errorf("%w: unknown compression %q", errMalformed, c)
		}
		out, err := io.ReadAll(io.LimitReader(r, maxBodySize+1))
		if err != nil || len(out) > maxBodySize {
			return nil, fmt.Errorf("%w: bad compressed body", errMalformed)
		}
		body = out
	}
	return decodeEnvelope(body)
}

// envelopeHead is how every 2.0 envelope starts when Python's json.dumps or
// envelope wrote it.
const envelopeHead = `{"oslo.version": "2.0", "oslo.message": "`

// plainInner returns the unquoted inner message of a body laid out exactly as
// envelope and Python write it, without validating the whole body with
// encoding/json first (the literal is checked while it is unquoted). ok
// false sends anything else, errors included, down the general path.
func plainInner(body []byte) (inner []byte, ok bool) {
	if len(body) < len(envelopeHead)+2 || string(body[:len(envelopeHead)]) != envelopeHead ||
		string(body[len(body)-2:]) != `"}` {
		return nil, false
	}
	lit := body[len(envelopeHead)-1 : len(body)-1]
	for i := 1; i < len(lit)-1; i++ {
		switch lit[i] {
		case '"': // the literal ends before the body does
			return nil, false
		case '\\': // the escaped byte is unquoteBytes' to check
			i++
		}
	}
	inner, ok, _ = unquoteBytes(lit)
	return inner, ok
}

// decodeEnvelope parses the JSON body of a message.
func decodeEnvelope(body []byte) (message, error) {
	if inner, ok := plainInner(body); ok {
		return decodeInner(inner)
	}
	if !json.Valid(body) {
		body = tolerantJSON(body)
		if !json.Valid(body) {
			return nil, malformedJSON(body, "")
		}
	}
	// The envelope's two keys are read without building a map first.
	var rawVer, rawMsg []byte
	var hasVer, hasMsg bool
	isObject := eachMember(body, func(k string, v []byte) {
		switch k {
		case "oslo.version":
			rawVer, hasVer = v, true
		case "oslo.message":
			rawMsg, hasMsg = v, true
		}
	})
	if !isObject {
		return nil, malformedJSON(body, "")
	}
	if !hasVer || !hasMsg {
		m, _ := splitObject(body)
		if m == nil {
			return nil, fmt.Errorf("%w: body is not a JSON object", errMalformed)
		}
		return m, nil
	}
	ver, ok := rawString(rawVer)
	if !ok || !versionCompatible(envelopeVersion, ver) {
		return nil, fmt.Errorf("%w: unsupported envelope version %s", errMalformed, rawVer)
	}
	inner, ok := rawStringBytes(rawMsg)
	if !ok {
		return nil, fmt.Errorf("%w: oslo.message is not a string", errMalformed)
	}
	return decodeInner(inner)
}

// decodeInner splits the inner message of an envelope.
func decodeInner(inner []byte) (message, error) {
	if !json.Valid(inner) {
		inner = tolerantJSON(inner)
		if !json.Valid(inner) {
			return nil, malformedJSON(inner, "oslo.message: ")
		}
	}
	im, ok := splitObject(inner)
	if !ok {
		return nil, malformedJSON(inner, "oslo.message: ")
	}
	if im == nil {
		return nil, fmt.Errorf("%w: oslo.message is not a JSON object", errMalformed)
	}
	return im, nil
}

// malformedJSON explains why raw is not a JSON object, with
// encoding/json's words.
func malformedJSON(raw []byte, what string) error {
	var probe message
	err := json.Unmarshal(raw, &probe)
	if err == nil {
		err = errors.New("not a JSON object")
	}
	return fmt.Errorf("%w: %s%v", errMalformed, what, err)
}

// versionCompatible is oslo's version_is_compatible(impl, req): same major,
// request minor <= implementation minor, and revision likewise.
func versionCompatible(impl, req string) bool {
	ip, ok1 := splitVersion(impl)
	rp, ok2 := splitVersion(req)
	if !ok1 || !ok2 {
		return false
	}
	if ip[0] != rp[0] || rp[1] > ip[1] {
		return false
	}
	return rp[1] != ip[1] || rp[2] <= ip[2]
}

func splitVersion(v string) ([3]int, bool) {
	var out [3]int
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// str returns the string value of key, "" when absent, null or not a string.
func (m message) str(key string) string {
	s, _ := rawString(m[key])
	return s
}

// isNull reports whether key is absent or null.
func (m message) isNull(key string) bool {
	raw, ok := m[key]
	return !ok || string(bytes.TrimSpace(raw)) == "null"
}

// context rebuilds oslo's ctxt: the _context_* keys without their prefix,
// plus client_timeout (the caller's _timeout, null when absent).
func (m message) context() (map[string]any, error) {
	ctx := map[string]any{}
	for k, raw := range m {
		name, ok := strings.CutPrefix(k, contextPrefix)
		if !ok {
			continue
		}
		v, err := rawAny(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: context key %q: %v", errMalformed, name, err)
		}
		ctx[name] = v
	}
	var timeout any
	if raw, ok := m["_timeout"]; ok {
		timeout, _ = rawAny(raw)
	}
	ctx["client_timeout"] = timeout
	return ctx, nil
}

// maxDurationSeconds is the longest time.Duration, in seconds.
const maxDurationSeconds = float64(math.MaxInt64) / float64(time.Second)

// incomingRequest is a decoded RPC request.
type incomingRequest struct {
	req      driver.Request
	msgID    string
	replyQ   string
	monitor  time.Duration
	uniqueID string
}

// decodeRequest reads an RPC request dict.
func decodeRequest(m message) (*incomingRequest, error) {
	in := &incomingRequest{}
	if in.req.Method = m.str("method"); in.req.Method == "" {
		return nil, fmt.Errorf("%w: request without a method", errMalformed)
	}
	if args, ok := m["args"]; ok && string(bytes.TrimSpace(args)) != "null" {
		if a := bytes.TrimSpace(args); len(a) == 0 || a[0] != '{' {
			return nil, fmt.Errorf("%w: args is not an object", errMalformed)
		}
		in.req.Args = args
	} else {
		in.req.Args = json.RawMessage("{}")
	}
	in.req.Namespace = m.str("namespace")
	in.req.Version = m.str("version")
	in.msgID = m.str("_msg_id")
	in.replyQ = m.str("_reply_q")
	in.uniqueID = m.str("_unique_id")
	if !m.isNull("_timeout") {
		secs, ok := rawNumber(m["_timeout"])
		if !ok {
			return nil, fmt.Errorf("%w: _timeout is not a number", errMalformed)
		}
		switch {
		case secs >= maxDurationSeconds:
			// Past what a Duration holds, the conversion would wrap
			// negative and turn call monitoring off.
			in.monitor = math.MaxInt64
		case secs > 0:
			in.monitor = time.Duration(secs * float64(time.Second))
		}
	}
	ctx, err := m.context()
	if err != nil {
		return nil, err
	}
	in.req.Context = ctx
	return in, nil
}

// incomingReply is a decoded reply or heartbeat.
type incomingReply struct {
	msgID   string
	result  json.RawMessage // nil when null
	failure *driver.Failure
	ending  bool
}

// decodeReply reads a reply dict. A failure is a JSON string holding the
// failure object; an object is accepted too.
func decodeReply(m message) (*incomingReply, error) {
	r := &incomingReply{msgID: m.str("_msg_id")}
	if r.msgID == "" {
		return nil, fmt.Errorf("%w: reply without _msg_id", errMalformed)
	}
	if !m.isNull("result") {
		r.result = m["result"]
	}
	if !m.isNull("failure") {
		raw := m["failure"]
		if s, ok := rawString(raw); ok {
			raw = json.RawMessage(s)
		}
		var f driver.Failure
		if err := json.Unmarshal(tolerantJSON(raw), &f); err != nil {
			return nil, fmt.Errorf("%w: failure: %v", errMalformed, err)
		}
		r.failure = &f
	}
	if raw, ok := m["ending"]; ok {
		r.ending, _ = rawBool(raw)
	}
	return r, nil
}

// decodeNotification reads a notification dict (v1 raw or v2 unwrapped).
func decodeNotification(m message) (*driver.Notification, string, error) {
	n := &driver.Notification{
		MessageID:   m.str("message_id"),
		PublisherID: m.str("publisher_id"),
		EventType:   m.str("event_type"),
		Priority:    m.str("priority"),
		Timestamp:   m.str("timestamp"),
		Payload:     m["payload"],
	}
	if n.Priority == "" {
		return nil, "", fmt.Errorf("%w: notification without priority", errMalformed)
	}
	if n.Payload == nil {
		n.Payload = json.RawMessage("null")
	}
	ctx, err := m.context()
	if err != nil {
		return nil, "", err
	}
	n.Context = ctx
	return n, m.str("_unique_id"), nil
}

// dedup is oslo's 16-entry cache of recently seen _unique_id values.
type dedup struct {
	ids  [16]string
	next int
	set  map[string]struct{}
}

func newDedup() *dedup { return &dedup{set: make(map[string]struct{}, 16)} }

func (d *dedup) seen(id string) bool {
	_, ok := d.set[id]
	return ok
}

func (d *dedup) add(id string) {
	if id == "" || d.seen(id) {
		return
	}
	if old := d.ids[d.next]; old != "" {
		delete(d.set, old)
	}
	d.ids[d.next] = id
	d.set[id] = struct{}{}
	d.next = (d.next + 1) % len(d.ids)
}

// compress applies kombu_compression to an outgoing body.
func compressBody(kind string, body []byte) ([]byte, map[string]any, error) {
	switch kind {
	case "":
		return body, nil, nil
	case "gzip":
		var buf bytes.Buffer
		zw := zlib.NewWriter(&buf)
		if _, err := zw.Write(body); err != nil {
			return nil, nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, nil, err
		}
		return buf.Bytes(), map[string]any{"compression": compressZlib}, nil
	}
	return nil, nil, fmt.Errorf("rabbit: kombu_compression %q not supported for sending", kind)
}

// uniqueIDOf finds the _unique_id value in a body this driver wrote (a
// returned message carries its body), without a full decode.
func uniqueIDOf(body []byte) string {
	i := bytes.Index(body, []byte("_unique_id"))
	if i < 0 {
		return ""
	}
	rest := body[i+len("_unique_id"):]
	start := -1
	for j, c := range rest {
		isHex := c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
		if start < 0 {
			if isHex {
				start = j
			} else if j > 12 {
				return ""
			}
			continue
		}
		if !isHex {
			return string(rest[start:j])
		}
	}
	return ""
}
