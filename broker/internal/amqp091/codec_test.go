package amqp091

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestMethodRoundTrip(t *testing.T) {
	cases := []Method{
		&ConnectionStart{VersionMajor: 0, VersionMinor: 9, ServerProperties: Table{"product": "x", "capabilities": Table{"publisher_confirms": true}}, Mechanisms: "PLAIN AMQPLAIN", Locales: "en_US"},
		&ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60},
		&QueueDeclare{Queue: "q", Durable: true, AutoDelete: true, NoWait: true, Arguments: Table{"x-max-priority": int32(9)}},
		&BasicPublish{Exchange: "ex", RoutingKey: "rk", Mandatory: true},
		&BasicDeliver{ConsumerTag: "c", DeliveryTag: 1 << 40, Redelivered: true, Exchange: "e", RoutingKey: "r"},
		&BasicNack{DeliveryTag: 7, Multiple: true, Requeue: true},
		&ExchangeDeclare{Exchange: "e", Type: "topic", Passive: false, Durable: true, AutoDelete: false, Internal: true, NoWait: true, Arguments: Table{}},
		&ConfirmSelect{Nowait: true},
	}
	var d Decoder
	for _, m := range cases {
		frame := AppendMethodFrame(nil, 3, m)
		frames, rest, err := ParseFrames(frame)
		if err != nil || len(rest) != 0 || len(frames) != 1 {
			t.Fatalf("%s: frames %v rest %d err %v", m.Name(), len(frames), len(rest), err)
		}
		if frames[0].Channel != 3 || frames[0].Type != FrameMethod {
			t.Fatalf("%s: bad frame %+v", m.Name(), frames[0])
		}
		c, mid, args, err := ParseMethodFrame(frames[0].Payload)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.Decode(c, mid, args)
		if err != nil {
			t.Fatalf("%s: %v", m.Name(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: got %#v want %#v", m.Name(), got, m)
		}
	}
}

func TestTableAllTypes(t *testing.T) {
	ts := time.Unix(1700000000, 0).UTC()
	in := Table{
		"bool": true, "i8": int8(-3), "u8": uint8(200), "i16": int16(-300), "u16": uint16(60000),
		"i32": int32(-70000), "u32": uint32(4000000000), "i64": int64(-1 << 40), "f32": float32(1.5),
		"f64": 2.25, "dec": Decimal{Scale: 2, Value: 12345}, "str": "hello", "bytes": []byte{1, 2},
		"time": ts, "nested": Table{"a": "b"}, "arr": []any{int32(1), "two", Table{"x": nil}}, "void": nil,
	}
	b := AppendTable(nil, in)
	r := NewReader(b)
	out := r.ReadTable()
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %#v\nwant %#v", out, in)
	}
}

func TestMalformed(t *testing.T) {
	var d Decoder
	for _, args := range [][]byte{nil, {0}, {0, 0, 5, 'a'}} {
		if _, err := d.Decode(ClassQueue, 10, args); !errors.Is(err, ErrMalformed) {
			t.Fatalf("args %v: err %v", args, err)
		}
	}
	if _, err := d.Decode(99, 1, nil); err == nil {
		t.Fatal("unknown method decoded")
	}
	// Bad frame end.
	fr := NewFrameReader(bufio.NewReader(bytes.NewReader([]byte{1, 0, 0, 0, 0, 0, 0, 0})), 0)
	if _, err := fr.ReadFrame(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad frame end: %v", err)
	}
	// Oversized frame.
	fr = NewFrameReader(bufio.NewReader(bytes.NewReader([]byte{1, 0, 0, 0, 1, 0, 0, 0})), 4096)
	if _, err := fr.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("large frame: %v", err)
	}
}

func TestBasicPropertiesRoundTrip(t *testing.T) {
	p := BasicProperties{
		Flags:       FlagContentType | FlagHeaders | FlagDeliveryMode | FlagPriority | FlagExpiration | FlagTimestamp,
		ContentType: "application/json", Headers: Table{"k": "v"}, DeliveryMode: 2, Priority: 5,
		Expiration: "1000", Timestamp: 1700000000,
	}
	b := p.Append(nil)
	var q BasicProperties
	if err := q.Read(NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("got %#v want %#v", q, p)
	}
}

func TestBodyFrames(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 10000)
	b := AppendBodyFrames(nil, 1, body, 4096)
	frames, rest, err := ParseFrames(b)
	if err != nil || len(rest) != 0 {
		t.Fatal(err)
	}
	if len(frames) != 3 {
		t.Fatalf("got %d frames", len(frames))
	}
	var got []byte
	for _, f := range frames {
		if len(f.Payload)+FrameOverhead > 4096 {
			t.Fatalf("frame of %d", len(f.Payload))
		}
		got = append(got, f.Payload...)
	}
	if !bytes.Equal(got, body) {
		t.Fatal("body mismatch")
	}
}
