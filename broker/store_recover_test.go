package broker

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// onlySegment returns the path of the single segment holding records.
func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "msgs", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	var found string
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
			if found != "" {
				t.Fatalf("more than one segment with records: %s and %s", found, f)
			}
			found = f
		}
	}
	if found == "" {
		t.Fatal("no segment with records")
	}
	return found
}

// recordOffsets returns the offset of each record in a segment.
func recordOffsets(t *testing.T, path string) []int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for off := 0; off < len(data); {
		offs = append(offs, off)
		off += 8 + int(binary.BigEndian.Uint32(data[off:]))
	}
	return offs
}

func tenConfirmed(t *testing.T, dir string) []string {
	t.Helper()
	var bodies []string
	for i := range 10 {
		bodies = append(bodies, fmt.Sprintf("m%02d", i))
	}
	withDurable(t, dir, func(_ *amqp.Connection, ch *amqp.Channel) {
		declareDurable(t, ch, "q")
		publishConfirmed(t, ch, "q", bodies...)
	})
	return bodies
}

// TestRecoveryCutsTornTail: a record cut short at the end of a segment (a
// crash in the middle of a write) is cut off on start, with a log line;
// every record before it is recovered, and records written after the
// restart are not stranded behind the torn bytes.
func TestRecoveryCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	bodies := tenConfirmed(t, dir)
	seg := onlySegment(t, dir)
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	good := fi.Size()
	// A header announcing 100 bytes, followed by 20 of them.
	torn := binary.BigEndian.AppendUint32(nil, 100)
	torn = append(torn, 1, 2, 3, 4)
	torn = append(torn, []byte(strings.Repeat("t", 20))...)
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	withDurable(t, dir, func(c *amqp.Connection, ch *amqp.Channel) {
		if got := listBodies(t, c, "q"); fmt.Sprint(got) != fmt.Sprint(bodies) {
			t.Fatalf("recovered %q, want %q", got, bodies)
		}
		declareDurable(t, ch)
		publishConfirmed(t, ch, "q", "after")
	})
	if fi, err := os.Stat(seg); err == nil && fi.Size() != good {
		t.Fatalf("segment is %d bytes, want the torn record cut (%d)", fi.Size(), good)
	}
	checkSegmentsClean(t, dir)
	withDurable(t, dir, func(c *amqp.Connection, _ *amqp.Channel) {
		if got := listBodies(t, c, "q"); fmt.Sprint(got) != fmt.Sprint(append(bodies, "after")) {
			t.Fatalf("second restart recovered %q", got)
		}
	})
}

// TestRecoveryRefusesCorruptionInTheMiddle: a record that fails its
// checksum with intact records after it is not a torn write. The broker
// refuses to start, naming the segment and the offset, instead of
// dropping the later records (enqueues lost, removes undone); the
// segment is left as it was.
func TestRecoveryRefusesCorruptionInTheMiddle(t *testing.T) {
	dir := t.TempDir()
	tenConfirmed(t, dir)
	seg := onlySegment(t, dir)
	offs := recordOffsets(t, seg)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	bad := offs[3]
	data[bad+8+5] ^= 0x40 // a bit of record 3's payload (its id)
	if err := os.WriteFile(seg, data, 0o640); err != nil {
		t.Fatal(err)
	}
	s := newDurable(t, dir)
	err = s.Start()
	shutdown(t, s)
	if err == nil {
		t.Fatal("broker started over a corrupt record followed by intact ones")
	}
	if want := fmt.Sprintf("offset %d", bad); !strings.Contains(err.Error(), filepath.Base(seg)) || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s and %s", err, filepath.Base(seg), want)
	}
	after, err := os.ReadFile(seg)
	if err != nil || string(after) != string(data) {
		t.Fatalf("the refused segment was changed (%v)", err)
	}
	// The lock was released with the failed start.
	s = newDurable(t, dir)
	err = s.Start()
	shutdown(t, s)
	if err == nil || strings.Contains(err.Error(), "pid") {
		t.Fatalf("second start: %v, want the same corruption error", err)
	}
}

func frameRecord(b, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

// TestIntactRecordAfter: what decides torn end against corruption. After
// a bad record, a following intact record is found; random bytes (a large
// message cut short) and zeros (pages never written) are not taken for
// one.
func TestIntactRecordAfter(t *testing.T) {
	remove := func(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'A'}, id) }
	random := make([]byte, 1<<20)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	withNext := frameRecord(nil, remove(7))
	withNext[10] ^= 1 // record 0 now fails its checksum
	next := len(withNext)
	withNext = frameRecord(withNext, remove(8))
	cases := []struct {
		name  string
		data  []byte
		maxID uint64
		want  int
	}{
		{"bad record then an intact one", withNext, 8, next},
		{"random bytes", random, 1000, -1},
		{"zeros", make([]byte, 1<<16), 1000, -1},
		{"bad record then a record with an impossible id", frameRecord([]byte{0, 0, 0, 1}, remove(1<<40)), 5, -1},
	}
	for _, c := range cases {
		if got := intactRecordAfter(c.data, 0, c.maxID); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
