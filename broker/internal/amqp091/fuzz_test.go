package amqp091

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

// The fuzz targets of this package check properties of the decoders, not
// only that they do not panic:
//
//   - FuzzFrames: FrameReader and ParseFrames cut the same frames out of
//     the same bytes, and re-encoding those frames gives back exactly the
//     bytes they were cut from.
//   - FuzzMethod: a decoded method re-encodes, and decoding that again
//     gives an equal method (decode, encode, decode).
//   - FuzzTable: the same round trip for field tables, every decoded value
//     being one of the Go types ReadTable documents.
//   - FuzzContentHeader: the same round trip for content header frames and
//     the basic class's properties.
//
// Seeds are in testdata/fuzz/<target>/ (frames captured from RabbitMQ 3.10
// and built from the spec); make fuzz runs the fuzzer on each.

// canon renders a decoded value so that two decodes can be compared: %#v
// sorts map keys, and spells NaN and -0 alike on both sides (which
// reflect.DeepEqual would not).
func canon(v any) string { return fmt.Sprintf("%#v", v) }

// payloadOf returns the payload of one encoded frame.
func payloadOf(frame []byte) []byte { return frame[7 : len(frame)-1] }

// spellFrame re-encodes a frame.
func spellFrame(f Frame) []byte {
	b := []byte{f.Type, byte(f.Channel >> 8), byte(f.Channel)}
	b = AppendLong(b, uint32(len(f.Payload)))
	b = append(b, f.Payload...)
	return append(b, FrameEnd)
}

func FuzzFrames(f *testing.F) {
	f.Add(AppendMethodFrame(nil, 0, &ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}))
	f.Add(AppendHeartbeat(AppendBodyFrames(nil, 1, []byte("hello world"), 12)))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0}) // bad frame end
	f.Add([]byte{1, 0, 1, 0, 0, 0, 4, 0, 60, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxFrame = 1 << 16
		parsed, rest, perr := ParseFrames(data)
		// What ParseFrames accepted is exactly the frames, re-encoded.
		var again []byte
		for _, fr := range parsed {
			again = append(again, spellFrame(fr)...)
		}
		consumed := data[:len(data)-len(rest)]
		if !bytes.Equal(again, consumed) {
			t.Fatalf("re-encoded frames differ from the %d bytes they came from", len(consumed))
		}
		if perr == nil && len(rest) >= 7 {
			size := uint64(rest[3])<<24 | uint64(rest[4])<<16 | uint64(rest[5])<<8 | uint64(rest[6])
			if uint64(len(rest)) >= size+8 {
				t.Fatalf("ParseFrames left a complete frame of %d bytes unread", size+8)
			}
		}
		// FrameReader reads the same frames, in the same order, while they
		// fit under its limit.
		fr := NewFrameReader(bufio.NewReaderSize(bytes.NewReader(data), 16), maxFrame)
		for i := 0; ; i++ {
			got, err := fr.ReadFrame()
			if err != nil {
				switch {
				case i < len(parsed):
					if !errors.Is(err, ErrFrameTooLarge) || len(parsed[i].Payload)+FrameOverhead <= maxFrame {
						t.Fatalf("frame %d: FrameReader: %v, ParseFrames read it", i, err)
					}
				case perr != nil:
					if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameTooLarge) {
						t.Fatalf("after %d frames: FrameReader %v, ParseFrames %v", i, err, perr)
					}
				default:
					if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrameTooLarge) {
						t.Fatalf("after %d frames: FrameReader %v on a truncated frame", i, err)
					}
				}
				return
			}
			if i >= len(parsed) {
				t.Fatalf("FrameReader read frame %d, ParseFrames only %d", i, len(parsed))
			}
			if got.Type != parsed[i].Type || got.Channel != parsed[i].Channel || !bytes.Equal(got.Payload, parsed[i].Payload) {
				t.Fatalf("frame %d differs: %+v vs %+v", i, got, parsed[i])
			}
		}
	})
}

// FuzzMethod decodes a method frame payload (class, method, arguments).
func FuzzMethod(f *testing.F) {
	for _, m := range []Method{
		&ConnectionStartOk{ClientProperties: Table{"n": Table{"x": true}, "l": []any{int32(1), "a"}}, Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"},
		&QueueDeclare{Queue: "q", Durable: true, Arguments: Table{"x-expires": int32(1800000), "x-queue-type": "quorum"}},
		&BasicPublish{Exchange: "openstack", RoutingKey: "compute.host1", Mandatory: true},
		&BasicNack{DeliveryTag: 1 << 40, Multiple: true, Requeue: true},
		&ExchangeDeclare{Exchange: "nova_fanout", Type: "fanout", AutoDelete: true},
		&ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED", ClassId: 10, MethodId: 50},
	} {
		f.Add(payloadOf(AppendMethodFrame(nil, 1, m)))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, mid, args, err := ParseMethodFrame(payload)
		if err != nil {
			if len(payload) >= 4 {
				t.Fatalf("ParseMethodFrame refused %d bytes: %v", len(payload), err)
			}
			return
		}
		var d Decoder
		m, err := d.Decode(c, mid, args)
		if err != nil {
			var unknown *UnknownMethodError
			if NewMethod(c, mid) == nil {
				if !errors.As(err, &unknown) {
					t.Fatalf("unknown method %d.%d: %v", c, mid, err)
				}
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%d.%d: error %v does not wrap ErrMalformed", c, mid, err)
			}
			return
		}
		if m.ClassID() != c || m.MethodID() != mid {
			t.Fatalf("decoded %d.%d as %s (%d.%d)", c, mid, m.Name(), m.ClassID(), m.MethodID())
		}
		first := canon(m)
		frame := AppendMethodFrame(nil, 5, m)
		frames, rest, err := ParseFrames(frame)
		if err != nil || len(rest) != 0 || len(frames) != 1 {
			t.Fatalf("%s: re-encoded frame does not parse: %v", m.Name(), err)
		}
		c2, mid2, args2, err := ParseMethodFrame(frames[0].Payload)
		if err != nil || c2 != c || mid2 != mid {
			t.Fatalf("%s: re-encoded as %d.%d (%v)", m.Name(), c2, mid2, err)
		}
		var d2 Decoder
		m2, err := d2.Decode(c2, mid2, args2)
		if err != nil {
			t.Fatalf("%s: re-encoded arguments do not decode: %v", m.Name(), err)
		}
		if second := canon(m2); second != first {
			t.Fatalf("%s: round trip changed the method:\n%s\n%s", m.Name(), first, second)
		}
	})
}

// FuzzTable decodes a field table (four-byte length, then the fields).
func FuzzTable(f *testing.F) {
	f.Add(AppendTable(nil, Table{
		"bool": true, "i8": int8(-3), "u8": uint8(200), "i16": int16(-300), "u16": uint16(60000),
		"i32": int32(-70000), "u32": uint32(4000000000), "i64": int64(-1 << 40), "f32": float32(1.5),
		"f64": 2.25, "dec": Decimal{Scale: 2, Value: 12345}, "str": "hello", "bytes": []byte{1, 2},
		"time": time.Unix(1700000000, 0).UTC(), "nested": Table{"a": "b"}, "arr": []any{int32(1), "two", Table{"x": nil}}, "void": nil,
	}))
	f.Add([]byte{0, 0, 0, 3, 1, 'k', 'Z'}) // unknown field type
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(data)
		tab := r.ReadTable()
		if r.Err() != nil {
			if !errors.Is(r.Err(), ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", r.Err())
			}
			if tab != nil {
				t.Fatal("a table that failed to decode was returned")
			}
			return
		}
		checkTableTypes(t, tab, 0)
		enc := AppendTable(nil, tab)
		r2 := NewReader(enc)
		tab2 := r2.ReadTable()
		if r2.Err() != nil {
			t.Fatalf("re-encoded table does not decode: %v", r2.Err())
		}
		if len(r2.Remaining()) != 0 {
			t.Fatalf("re-encoded table leaves %d bytes", len(r2.Remaining()))
		}
		if canon(tab) != canon(tab2) {
			t.Fatalf("round trip changed the table:\n%s\n%s", canon(tab), canon(tab2))
		}
		// A table is at most as long as what it was read from: duplicate
		// keys collapse, nothing grows.
		if len(enc) > len(data)-len(r.Remaining()) {
			t.Fatalf("re-encoded table is %d bytes, read from %d", len(enc), len(data)-len(r.Remaining()))
		}
	})
}

// checkTableTypes fails unless every value is one of ReadTable's types.
func checkTableTypes(t *testing.T, v any, depth int) {
	t.Helper()
	if depth > maxDepth+2 {
		t.Fatalf("value nested %d deep, limit %d", depth, maxDepth)
	}
	switch v := v.(type) {
	case Table:
		for _, e := range v {
			checkTableTypes(t, e, depth+1)
		}
	case []any:
		for _, e := range v {
			checkTableTypes(t, e, depth+1)
		}
	case bool, int8, uint8, int16, uint16, int32, uint32, int64, float32, float64, Decimal, string, []byte, time.Time, nil:
	default:
		t.Fatalf("decoded value of type %T", v)
	}
}

// FuzzContentHeader decodes a content header frame payload and its basic
// properties.
func FuzzContentHeader(f *testing.F) {
	props := (&BasicProperties{
		Flags:       FlagContentType | FlagContentEncoding | FlagHeaders | FlagDeliveryMode | FlagPriority | FlagExpiration,
		ContentType: "application/json", ContentEncoding: "utf-8", Headers: Table{}, DeliveryMode: 2, Expiration: "60000",
	}).Append(nil)
	f.Add(payloadOf(AppendHeaderFrame(nil, 1, ClassBasic, 400, props)))
	all := (&BasicProperties{Flags: 0xfffc, ContentType: "a", ContentEncoding: "b", Headers: Table{"h": int64(1)},
		DeliveryMode: 1, Priority: 9, CorrelationId: "c", ReplyTo: "r", Expiration: "1", MessageId: "m",
		Timestamp: 1700000000, Type: "t", UserId: "u", AppId: "p", Reserved: "x"}).Append(nil)
	f.Add(payloadOf(AppendHeaderFrame(nil, 1, ClassBasic, 0, all)))
	f.Fuzz(func(t *testing.T, payload []byte) {
		h, err := ParseContentHeader(payload)
		if err != nil {
			if len(payload) >= 14 {
				t.Fatalf("ParseContentHeader refused %d bytes: %v", len(payload), err)
			}
			return
		}
		frame := AppendHeaderFrame(nil, 1, h.ClassID, h.BodySize, h.Properties)
		frames, _, err := ParseFrames(frame)
		if err != nil || len(frames) != 1 {
			t.Fatalf("re-encoded header frame does not parse: %v", err)
		}
		h2, err := ParseContentHeader(frames[0].Payload)
		if err != nil || h2.ClassID != h.ClassID || h2.BodySize != h.BodySize || !bytes.Equal(h2.Properties, h.Properties) {
			t.Fatalf("header round trip: %+v, %v; want %+v", h2, err, h)
		}
		var p BasicProperties
		if err := p.Read(NewReader(h.Properties)); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var p2 BasicProperties
		if err := p2.Read(NewReader(p.Append(nil))); err != nil {
			t.Fatalf("re-encoded properties do not decode: %v", err)
		}
		// Continuation flags (bit 0) are skipped on reading and not
		// written back.
		p.Flags &^= 1
		if canon(p) != canon(p2) {
			t.Fatalf("round trip changed the properties:\n%s\n%s", canon(p), canon(p2))
		}
	})
}
