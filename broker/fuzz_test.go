package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"oslogo/broker/internal/amqp091"
)

// fuzzFrames turns fuzz input into well-delimited frames, so the fuzzer
// explores method arguments, content and channel state rather than frame
// delimiting (TestBadInput covers that): each frame is
// [type][channel][payload length][payload], a frame type of 1 (method),
// 2 (header), 3 (body) or 8 (heartbeat) picked by the type byte.
func fuzzFrames(data []byte) []byte {
	var out []byte
	for len(data) >= 3 {
		typ := [4]byte{amqp091.FrameMethod, amqp091.FrameHeader, amqp091.FrameBody, amqp091.FrameHeartbeat}[data[0]%4]
		ch := uint16(data[1] % 4)
		n := int(data[2])
		data = data[3:]
		n = min(n, len(data))
		payload := data[:n]
		data = data[n:]
		out = append(out, typ, byte(ch>>8), byte(ch))
		out = amqp091.AppendLong(out, uint32(len(payload)))
		out = append(out, payload...)
		out = append(out, amqp091.FrameEnd)
	}
	return out
}

// fuzzSeed encodes frames in fuzzFrames' input format.
func fuzzSeed(frames ...[]byte) []byte {
	var out []byte
	for _, f := range frames {
		typ := map[byte]byte{amqp091.FrameMethod: 0, amqp091.FrameHeader: 1, amqp091.FrameBody: 2, amqp091.FrameHeartbeat: 3}[f[0]]
		payload := f[7 : len(f)-1]
		out = append(out, typ, f[2], byte(len(payload)))
		out = append(out, payload...)
	}
	return out
}

func methodFrame(ch uint16, m amqp091.Method) []byte { return amqp091.AppendMethodFrame(nil, ch, m) }

// FuzzConnection sends arbitrary frames on an open connection, then
// connection.close: the broker must answer (close-ok, or a connection.close
// of its own for a protocol error) within seconds, never crash, and keep
// accepting connections.
func FuzzConnection(f *testing.F) {
	props := amqp091.AppendShort(nil, 0)
	f.Add(fuzzSeed(
		methodFrame(1, &amqp091.ChannelOpen{}),
		methodFrame(1, &amqp091.QueueDeclare{Queue: "fz"}),
		methodFrame(1, &amqp091.ConfirmSelect{}),
		methodFrame(1, &amqp091.BasicPublish{RoutingKey: "fz"}),
		amqp091.AppendHeaderFrame(nil, 1, amqp091.ClassBasic, 3, props),
		amqp091.AppendBodyFrames(nil, 1, []byte("abc"), 4096),
		methodFrame(1, &amqp091.BasicConsume{Queue: "fz"}),
		methodFrame(1, &amqp091.BasicAck{DeliveryTag: 1}),
	))
	f.Add(fuzzSeed(
		methodFrame(2, &amqp091.ChannelOpen{}),
		methodFrame(2, &amqp091.ExchangeDeclare{Exchange: "fx", Type: "topic"}),
		methodFrame(2, &amqp091.QueueDeclare{Queue: "", Exclusive: true}),
		methodFrame(2, &amqp091.QueueBind{Queue: "", Exchange: "fx", RoutingKey: "a.#"}),
		methodFrame(2, &amqp091.TxSelect{}),
		methodFrame(2, &amqp091.BasicPublish{Exchange: "fx", RoutingKey: "a.b", Mandatory: true}),
		amqp091.AppendHeaderFrame(nil, 2, amqp091.ClassBasic, 0, props),
		methodFrame(2, &amqp091.TxCommit{}),
		methodFrame(2, &amqp091.BasicGet{Queue: ""}),
		methodFrame(2, &amqp091.BasicNack{DeliveryTag: 1, Requeue: true}),
		methodFrame(2, &amqp091.QueuePurge{Queue: ""}),
		methodFrame(2, &amqp091.ExchangeDelete{Exchange: "fx"}),
		methodFrame(2, &amqp091.ChannelClose{}),
	))
	// A publish whose content never comes: a protocol error (505).
	f.Add(fuzzSeed(
		methodFrame(1, &amqp091.ChannelOpen{}),
		methodFrame(1, &amqp091.BasicPublish{RoutingKey: "x"}),
		methodFrame(1, &amqp091.BasicQos{PrefetchCount: 1}),
	))
	f.Add(fuzzSeed(
		methodFrame(3, &amqp091.ChannelOpen{}),
		methodFrame(3, &amqp091.BasicQos{PrefetchCount: 1}),
		methodFrame(3, &amqp091.BasicPublish{RoutingKey: "nowhere"}),
		amqp091.AppendHeaderFrame(nil, 3, amqp091.ClassBasic, 0, props),
		methodFrame(3, &amqp091.BasicRecover{Requeue: true}),
		amqp091.AppendHeartbeat(nil),
	))
	s, _ := startBroker(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := rawDial(t, s)
		_ = r.nc.SetDeadline(time.Now().Add(5 * time.Second))
		// A write may fail once the broker has closed the connection on a
		// protocol error; the close exchange below still has to finish.
		_, _ = r.nc.Write(fuzzFrames(data))
		_, _ = r.nc.Write(amqp091.AppendMethodFrame(nil, 0, &amqp091.ConnectionClose{ReplyCode: 200}))
		for {
			fr, err := r.fr.ReadFrame()
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("no close-ok and no connection.close within 5 s")
				}
				var ne net.Error
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
					break // closed by the broker after its connection.close
				}
				t.Fatalf("reading the broker's frames: %v", err)
			}
			if fr.Type != amqp091.FrameMethod || fr.Channel != 0 {
				continue
			}
			c, m, _, err := amqp091.ParseMethodFrame(fr.Payload)
			if err != nil {
				t.Fatalf("broker sent a malformed method frame: %v", err)
			}
			if c == 10 && (m == 51 || m == 50) { // close-ok, or its own close
				break
			}
		}
		_ = r.nc.Close()
	})
}
