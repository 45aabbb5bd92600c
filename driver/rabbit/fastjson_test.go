package rabbit

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/oslogo/oslogo/driver"
)

var fastJSONCorpus = []string{
	`{}`, ` { } `, `null`, `[]`, `"x"`, `1`, `{"a": 1}`, `{"a":1,"a":2}`,
	`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"echo\", \"args\": {\"x\": [1, \"a\", null]}, \"_unique_id\": \"01\"}"}`,
	`{"k\u00e9y": "v\u00e9", "b": [1, {"c": "}"}], "t": true, "f": false, "n": null, "x": -1.5e3}`,
	`{"s": "tab\tnew\nline \"q\" \\ \/ \b\f\r", "u": "\ud83d\ude00", "bad": "\ud800"}`,
	"{\"inv\": \"\xff\xfe\"}", "{\"k\xff\": 1}",
	`{"a": {"b": {"c": [[], {}, ""]}}, "d": "]"}`,
	`{"a": 1,}`, `{"a" 1}`, `{`, ``, `{"a": NaN}`,
	`{"n": 1e999, "m": 12345678901234567890}`,
}

// TestParseObjectMatchesEncodingJSON: parseObject gives what json.Unmarshal
// into map[string]json.RawMessage gives, including which inputs fail.
func TestParseObjectMatchesEncodingJSON(t *testing.T) {
	for _, in := range fastJSONCorpus {
		checkParseObject(t, []byte(in))
	}
}

func checkParseObject(t *testing.T, in []byte) {
	t.Helper()
	var want message
	werr := json.Unmarshal(in, &want)
	got, ok := parseObject(in)
	if ok != (werr == nil) {
		t.Fatalf("%q: parseObject ok=%v, encoding/json err=%v", in, ok, werr)
	}
	if !ok {
		return
	}
	if (got == nil) != (want == nil) || len(got) != len(want) {
		t.Fatalf("%q: got %v, want %v", in, got, want)
	}
	for k, v := range want {
		if string(got[k]) != string(v) {
			t.Fatalf("%q: key %q: got %s, want %s", in, k, got[k], v)
		}
		var wv any
		if werr := json.Unmarshal(v, &wv); werr == nil {
			gv, err := rawAny(got[k])
			if err != nil || !reflect.DeepEqual(gv, wv) {
				t.Fatalf("%q: rawAny(%s) = %#v, %v; want %#v", in, v, gv, err, wv)
			}
		}
		var ws string
		serr := json.Unmarshal(v, &ws)
		gs, sok := rawString(v)
		if len(v) > 0 && v[0] == '"' && (sok != (serr == nil) || gs != ws) {
			t.Fatalf("%q: rawString(%s) = %q, %v; want %q, %v", in, v, gs, sok, ws, serr)
		}
	}
}

func FuzzParseObject(f *testing.F) {
	for _, in := range fastJSONCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkParseObject(t, in)
	})
}

func BenchmarkDecodeRequest(b *testing.B) {
	body, err := encodeRequest(&requestFixture, &callInfo{msgID: newHexID(), replyQ: "reply_" + newHexID()}, newHexID())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m, err := decodeBody(contentType, nil, body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := decodeRequest(m); err != nil {
			b.Fatal(err)
		}
	}
}

var requestFixture = driver.Request{
	Method:  "echo",
	Args:    json.RawMessage(`{"s": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`),
	Context: map[string]any{"user_id": "u1", "project_id": "p1", "is_admin": false, "read_deleted": "no"},
}

// refDecodeEnvelope is decodeEnvelope written with encoding/json alone,
// the reference the reflection-free version must agree with.
func refDecodeEnvelope(body []byte) (message, bool) {
	var m message
	if err := json.Unmarshal(body, &m); err != nil {
		if err2 := json.Unmarshal(tolerantJSON(body), &m); err2 != nil || m == nil {
			return nil, false
		}
	}
	if m == nil {
		return nil, false
	}
	rawVer, hasVer := m["oslo.version"]
	rawMsg, hasMsg := m["oslo.message"]
	if !hasVer || !hasMsg {
		return m, true
	}
	var ver string
	if err := json.Unmarshal(rawVer, &ver); err != nil || !versionCompatible(envelopeVersion, ver) {
		return nil, false
	}
	var inner string
	if err := json.Unmarshal(rawMsg, &inner); err != nil {
		return nil, false
	}
	var im message
	if err := json.Unmarshal([]byte(inner), &im); err != nil {
		if err2 := json.Unmarshal(tolerantJSON([]byte(inner)), &im); err2 != nil {
			return nil, false
		}
	}
	return im, im != nil
}

func checkDecodeEnvelope(t *testing.T, body []byte) {
	t.Helper()
	want, wok := refDecodeEnvelope(body)
	got, err := decodeEnvelope(body)
	if wok != (err == nil) {
		t.Fatalf("%q: decodeEnvelope err=%v, reference ok=%v", body, err, wok)
	}
	if !wok {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%q: got %v, want %v", body, got, want)
	}
	for k, v := range want {
		if string(got[k]) != string(v) {
			t.Fatalf("%q: key %q: got %s, want %s", body, k, got[k], v)
		}
	}
}

var envelopeCorpus = []string{
	`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"echo\", \"args\": {\"x\": [1, \"a\", null]}, \"_unique_id\": \"01\"}"}`,
	`{"oslo.version": "2.0", "oslo.message": "{\"result\": NaN, \"ending\": true, \"_msg_id\": \"a\"}"}`,
	`{"oslo.version": "2.0", "oslo.message": "null"}`, `{"oslo.version": "2.0", "oslo.message": "[]"}`,
	`{"oslo.version": "2.1", "oslo.message": "{}"}`, `{"oslo.version": null, "oslo.message": "{}"}`,
	`{"oslo.version": "2.0", "oslo.message": {}}`, `{"oslo.version": "2.0"}`, `{"payload": Infinity}`,
	`{"oslo.version": "2.0", "oslo.message": "{\"k\\u00e9\": \"\\ud83d\\ude00\"}"}`, `null`, `[1]`, `{`,
	`{"oslo.message": "{}", "oslo.version": "2.0.0", "oslo.version": "1.0"}`,
}

func TestDecodeEnvelopeMatchesReference(t *testing.T) {
	for _, in := range append(envelopeCorpus, fastJSONCorpus...) {
		checkDecodeEnvelope(t, []byte(in))
	}
}

func FuzzDecodeEnvelopeReference(f *testing.F) {
	for _, in := range envelopeCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDecodeEnvelope(t, body) })
}

// TestPyMarshalFastPath: the direct writer gives the bytes of the
// encoding/json path for every type it handles.
func TestPyMarshalFastPath(t *testing.T) {
	values := []any{
		nil, "", "plain", "h\u00e9llo \u2603 \U0001F600 \"q\" \\ \n\t\x01 <&>", true, false,
		0, -7, 1 << 40, int64(-1 << 62), []string{}, []string(nil), []string{"admin", "r\u00f4le"},
		[]any{}, []any(nil), []any{"a", 1, true, nil, "\u00e9"}, []any{[]any{"nested"}}, []any{1.5},
		map[string]any{"a": 1}, 2.5, float64(3), json.Number("12"),
	}
	for _, v := range values {
		want, werr := pyMarshalSlow(v)
		got, err := pyMarshal(v)
		if (err == nil) != (werr == nil) || string(got) != string(want) {
			t.Errorf("%#v: fast %q (%v), encoding/json %q (%v)", v, got, err, want, werr)
		}
	}
}
