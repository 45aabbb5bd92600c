package amqp091

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ProtocolHeader is what a 0-9-1 client sends first.
var ProtocolHeader = []byte("AMQP\x00\x00\x09\x01")

// FrameOverhead is the size of a frame's header and end marker.
const FrameOverhead = 8

// Frame is one frame. Payload aliases the FrameReader's buffer and is valid
// until the next ReadFrame.
type Frame struct {
	Type    uint8
	Channel uint16
	Payload []byte
}

// ErrFrameTooLarge reports a frame over the negotiated frame_max.
var ErrFrameTooLarge = errors.New("amqp091: frame too large")

// FrameReader reads frames from a buffered reader.
type FrameReader struct {
	r *bufio.Reader
	// MaxFrame bounds a frame's total size, header and end marker included.
	MaxFrame uint32
	buf      []byte
	// hdr is here, not on the stack: passed to io.ReadFull it would escape
	// and cost an allocation per frame.
	hdr [7]byte
}

// NewFrameReader returns a FrameReader over r.
func NewFrameReader(r *bufio.Reader, maxFrame uint32) *FrameReader {
	return &FrameReader{r: r, MaxFrame: maxFrame}
}

// Buffered reports how many bytes can be read without blocking.
func (fr *FrameReader) Buffered() int { return fr.r.Buffered() }

// ReadFrame reads the next frame.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	hdr := fr.hdr[:]
	if _, err := io.ReadFull(fr.r, hdr); err != nil {
		return Frame{}, err
	}
	f := Frame{Type: hdr[0], Channel: binary.BigEndian.Uint16(hdr[1:3])}
	size := binary.BigEndian.Uint32(hdr[3:7])
	if fr.MaxFrame != 0 && uint64(size)+FrameOverhead > uint64(fr.MaxFrame) {
		return Frame{}, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, uint64(size)+FrameOverhead, fr.MaxFrame)
	}
	if cap(fr.buf) < int(size)+1 {
		fr.buf = make([]byte, int(size)+1)
	}
	b := fr.buf[:size+1]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	if b[size] != FrameEnd {
		return Frame{}, fmt.Errorf("%w: bad frame end 0x%02x", ErrMalformed, b[size])
	}
	f.Payload = b[:size]
	return f, nil
}

// ParseFrames decodes as many complete frames as data holds; it is what the
// fuzz target exercises and what tests use to read broker output.
func ParseFrames(data []byte) (frames []Frame, rest []byte, err error) {
	for len(data) >= 7 {
		size := binary.BigEndian.Uint32(data[3:7])
		if uint64(len(data)) < 7+uint64(size)+1 {
			break
		}
		if data[7+size] != FrameEnd {
			return frames, data, fmt.Errorf("%w: bad frame end", ErrMalformed)
		}
		frames = append(frames, Frame{Type: data[0], Channel: binary.BigEndian.Uint16(data[1:3]), Payload: data[7 : 7+size]})
		data = data[8+size:]
	}
	return frames, data, nil
}

// ParseMethodFrame splits a method frame payload into its ids and
// arguments.
func ParseMethodFrame(p []byte) (classID, methodID uint16, args []byte, err error) {
	if len(p) < 4 {
		return 0, 0, nil, fmt.Errorf("%w: short method frame", ErrMalformed)
	}
	return binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]), p[4:], nil
}

// ContentHeader is a decoded content header frame; Properties is the raw
// property flags and list, kept as bytes so brokers can pass it through.
type ContentHeader struct {
	ClassID    uint16
	BodySize   uint64
	Properties []byte
}

// ParseContentHeader decodes a content header frame payload.
func ParseContentHeader(p []byte) (ContentHeader, error) {
	if len(p) < 14 {
		return ContentHeader{}, fmt.Errorf("%w: short content header", ErrMalformed)
	}
	return ContentHeader{
		ClassID:    binary.BigEndian.Uint16(p),
		BodySize:   binary.BigEndian.Uint64(p[4:]),
		Properties: p[12:],
	}, nil
}

// AppendMethodFrame appends a complete method frame.
func AppendMethodFrame(b []byte, channel uint16, m Method) []byte {
	start := len(b)
	b = append(b, FrameMethod, byte(channel>>8), byte(channel), 0, 0, 0, 0)
	b = AppendShort(b, m.ClassID())
	b = AppendShort(b, m.MethodID())
	b = m.Append(b)
	binary.BigEndian.PutUint32(b[start+3:], uint32(len(b)-start-7))
	return append(b, FrameEnd)
}

// AppendHeaderFrame appends a content header frame with raw properties.
func AppendHeaderFrame(b []byte, channel, classID uint16, bodySize uint64, props []byte) []byte {
	b = append(b, FrameHeader, byte(channel>>8), byte(channel))
	b = AppendLong(b, uint32(12+len(props)))
	b = AppendShort(b, classID)
	b = AppendShort(b, 0)
	b = AppendLonglong(b, bodySize)
	b = append(b, props...)
	return append(b, FrameEnd)
}

// AppendBodyFrames appends body split into frames of at most frameMax
// bytes (header and end marker included).
func AppendBodyFrames(b []byte, channel uint16, body []byte, frameMax uint32) []byte {
	chunk := int(frameMax) - FrameOverhead
	if frameMax == 0 || chunk <= 0 {
		chunk = len(body)
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		b = append(b, FrameBody, byte(channel>>8), byte(channel))
		b = AppendLong(b, uint32(n))
		b = append(b, body[:n]...)
		b = append(b, FrameEnd)
		body = body[n:]
	}
	return b
}

// AppendHeartbeat appends a heartbeat frame.
func AppendHeartbeat(b []byte) []byte {
	return append(b, FrameHeartbeat, 0, 0, 0, 0, 0, 0, FrameEnd)
}
