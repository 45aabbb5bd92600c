package broker

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
	"github.com/oslogo/oslogo/internal/rawsock"
)

// outHighWater is the output backlog above which queues stop delivering to
// a connection until its writer catches up.
const outHighWater = 1 << 20

// outReadStop is the output backlog above which a connection's reader stops
// reading from its client until the writer catches up: replies, confirms
// and basic.return are produced by the client's own input, so a client
// that sends but never reads is slowed to the pace it reads at (and
// disconnected after WriteTimeout without progress) instead of growing the
// broker's memory.
const outReadStop = 4 << 20

// writeChunk is the most a net.Conn write (TLS, pipes) is given at once, so
// that the write deadline measures progress rather than the whole backlog.
const writeChunk = 64 << 10

// errStuckPeer ends a connection whose client took no output for
// WriteTimeout.
var errStuckPeer = errors.New("client stopped reading")

type conn struct {
	srv *Server
	nc  net.Conn
	// sock is nc's socket, read and written with raw system calls (see
	// package rawsock), or nil (TLS, in-process pipes) to use nc.
	sock *rawsock.Socket
	// inlineOK: a reader may write this socket on its own goroutine. Not
	// for TLS: a tls.Conn whose write hit a deadline is broken for good,
	// so no short deadline may bound such a write.
	inlineOK bool
	id       uint64
	log      *slog.Logger

	br  *bufio.Reader
	fr  *amqp091.FrameReader
	dec amqp091.Decoder

	frameMax    uint32
	channelMax  uint16
	heartbeat   time.Duration
	user        *user
	vh          *vhost
	clientProps amqp091.Table
	capCancel   bool
	capBlocked  bool
	capAuthFail bool
	name        string

	// channels is owned by the reader goroutine; other goroutines reach
	// channels through consumers.
	channels map[uint16]*channel
	// closing is set once connection.close was sent; the reader then only
	// waits for close-ok.
	closing bool

	outMu     sync.Mutex
	out       []byte
	spare     []byte
	outLen    atomic.Int64
	stalled   map[*queue]struct{}
	flushDone bool // writer has exited; drop further output
	flushing  bool // a goroutine is writing a swapped-out buffer
	// pending is the size of the buffer being written (flushing), counted
	// with out against outReadStop; written under outMu.
	pending atomic.Int64
	// closeSent: connection.close went out (protocol error or shutdown);
	// there is never a second one.
	closeSent bool
	// drained is signalled after every write and when the writer ends, for
	// a reader waiting for the backlog to fall below outReadStop.
	drained chan struct{}
	// finalBy (unix ns, 0 if unset) caps write deadlines once the
	// connection is ending.
	finalBy atomic.Int64
	// drainInput: the input stream is out of step (a frame error), so
	// the reader cannot wait for close-ok; cleanup discards what the
	// client still sends, briefly, so closing does not reset the
	// connection before the client reads connection.close.
	drainInput bool
	// admitted: counted in Server.open (MaxConnections).
	admitted bool
	// running: the handshake is over and the writer runs.
	running atomic.Bool
	// batching is set while the reader processes frames already buffered;
	// output produced meanwhile is flushed at the end of the batch, often
	// inline by the reader, saving a wake-up of the writer goroutine.
	batching atomic.Bool
	// touched lists connections this reader delivered to in the current
	// batch (reader goroutine only).
	touched  []*conn
	closeOut bool // close the socket after the next flush
	wake     chan struct{}
	done     chan struct{}
	writerWG sync.WaitGroup

	blockedSent bool
	// Reused method values for the hot paths, guarded by outMu.
	deliverM amqp091.BasicDeliver
	ackM     amqp091.BasicAck
	// exclusive queues owned by this connection (reader goroutine only).
	exclusive []*queue
	mon       connMonitor // what the management API reads (monitor.go)
}

func newConn(srv *Server, nc net.Conn, id uint64) *conn {
	c := &conn{srv: srv, nc: nc, id: id, log: srv.log.With("conn", id),
		frameMax: srv.opts.FrameMax, channelMax: srv.opts.ChannelMax,
		channels: map[uint16]*channel{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
		drained: make(chan struct{}, 1)}
	c.sock = rawsock.Of(nc)
	_, isTLS := nc.(*tls.Conn)
	c.inlineOK = !isTLS
	var r io.Reader = nc
	if c.sock != nil {
		r = c.sock
	}
	c.br = bufio.NewReaderSize(countingReader{r, &c.mon.recvOct}, 64<<10)
	c.fr = amqp091.NewFrameReader(c.br, srv.opts.FrameMax)
	c.name = nc.RemoteAddr().String() + " -> " + nc.LocalAddr().String()
	return c
}

// serve runs the connection on the calling goroutine until it ends.
func (c *conn) serve() {
	defer c.cleanup()
	if err := c.handshake(); err != nil {
		c.log.Debug("handshake failed", "err", err)
		return
	}
	c.writerWG.Add(1)
	c.running.Store(true)
	go c.writeLoop()
	err := c.readLoop()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
		c.log.Debug("connection ended", "err", err)
	}
}

func (c *conn) cleanup() {
	// Stop the writer after it flushes what is queued (close-ok, errors).
	// The reader may have ended inside a batch: wake the writer directly.
	c.batching.Store(false)
	c.outMu.Lock()
	c.closeOut = true
	c.outMu.Unlock()
	c.wakeWriter()
	close(c.done)
	// A client that stopped reading must not hold the writer for long.
	final := time.Now().Add(2 * time.Second)
	c.finalBy.Store(final.UnixNano())
	_ = c.nc.SetWriteDeadline(final)
	c.writerWG.Wait()
	if c.drainInput {
		c.discardInput(final)
	}
	_ = c.nc.Close()
	c.releaseChannels()
	c.outMu.Lock()
	c.out, c.spare, c.flushDone = nil, nil, true
	c.outMu.Unlock()
	c.foldStats()
	c.srv.removeConn(c)
}

// discardInput half-closes the socket and reads what the client still
// sends until it closes or until the deadline: closing a socket with
// unread input resets the connection, and the client could lose the
// connection.close still in its receive buffer.
func (c *conn) discardInput(deadline time.Time) {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.CloseWrite()
	_ = tc.SetReadDeadline(deadline)
	_, _ = io.Copy(io.Discard, io.LimitReader(tc, 16<<20))
}

// releaseChannels ends every channel (requeueing unacknowledged messages,
// cancelling consumers) and deletes the connection's exclusive queues.
// Reader goroutine only; a second call does nothing.
func (c *conn) releaseChannels() {
	for _, ch := range c.channels {
		ch.shutdown()
	}
	clear(c.channels)
	for _, q := range c.exclusive {
		q.vh.deleteQueue(q, "owner closed")
	}
	c.exclusive = nil
}

// writeRaw writes during the handshake, before the writer starts.
func (c *conn) writeMethodNow(ch uint16, m amqp091.Method) error {
	n, err := c.nc.Write(amqp091.AppendMethodFrame(nil, ch, m))
	c.mon.sendOct.Add(uint64(n))
	return err
}

func (c *conn) readMethodNow(want amqp091.Method) error {
	// Heartbeats are skipped in a loop: a client may send any number.
	f, err := c.fr.ReadFrame()
	for err == nil && f.Type == amqp091.FrameHeartbeat && f.Channel == 0 {
		f, err = c.fr.ReadFrame()
	}
	if err != nil {
		return err
	}
	if f.Type != amqp091.FrameMethod || f.Channel != 0 {
		return errors.New("expected a method frame on channel 0")
	}
	cid, mid, args, err := amqp091.ParseMethodFrame(f.Payload)
	if err != nil {
		return err
	}
	if cid == amqp091.ClassConnection && mid == 50 && want.MethodID() != 50 {
		// The client gave up (connection.close); answer and stop.
		_ = c.writeMethodNow(0, &amqp091.ConnectionCloseOk{})
		return io.EOF
	}
	if cid != want.ClassID() || mid != want.MethodID() {
		return errors.New("unexpected method during handshake")
	}
	return want.Read(amqp091.NewReader(args))
}

func (c *conn) handshake() error {
	deadline := time.Now().Add(c.srv.opts.HandshakeTimeout)
	_ = c.nc.SetDeadline(deadline)
	defer c.nc.SetDeadline(time.Time{})
	var hdr [8]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return err
	}
	if !bytes.Equal(hdr[:], amqp091.ProtocolHeader) {
		// The spec says: answer with the protocol we speak, then close.
		_, _ = c.nc.Write(amqp091.ProtocolHeader)
		return errors.New("bad protocol header")
	}
	start := &amqp091.ConnectionStart{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: amqp091.Table{
			"product":      c.srv.opts.ProductName,
			"version":      c.srv.opts.ProductVersion,
			"platform":     "Go (oslogo embedded broker)",
			"copyright":    "oslogo contributors",
			"information":  "oslogo embedded AMQP 0-9-1 broker",
			"cluster_name": "oslogo",
			"capabilities": amqp091.Table{
				"publisher_confirms":           true,
				"exchange_exchange_bindings":   true,
				"basic.nack":                   true,
				"consumer_cancel_notify":       true,
				"connection.blocked":           true,
				"consumer_priorities":          true,
				"authentication_failure_close": true,
				"per_consumer_qos":             true,
				"direct_reply_to":              false,
			},
		},
		Mechanisms: "PLAIN AMQPLAIN",
		Locales:    "en_US",
	}
	if err := c.writeMethodNow(0, start); err != nil {
		return err
	}
	var so amqp091.ConnectionStartOk
	if err := c.readMethodNow(&so); err != nil {
		return err
	}
	c.clientProps = so.ClientProperties
	if caps, ok := so.ClientProperties["capabilities"].(amqp091.Table); ok {
		c.capCancel, _ = caps["consumer_cancel_notify"].(bool)
		c.capBlocked, _ = caps["connection.blocked"].(bool)
		c.capAuthFail, _ = caps["authentication_failure_close"].(bool)
	}
	if n, ok := so.ClientProperties["connection_name"].(string); ok {
		c.log = c.log.With("name", n)
	}
	name, pw, ok := parseAuth(so.Mechanism, so.Response)
	if !ok {
		c.srv.loginRefused(c, "", "unsupported mechanism or malformed response")
		return c.refuse(amqp091.AccessRefused, "ACCESS_REFUSED - mechanism "+so.Mechanism+" or its response is not supported")
	}
	u := c.srv.lookupUser(name)
	if u == nil || !u.checkPassword(pw) {
		c.srv.loginRefused(c, name, "wrong user name or password")
		return c.refuse(amqp091.AccessRefused, "ACCESS_REFUSED - Login was refused using authentication mechanism "+so.Mechanism+". For details see the broker logfile.")
	}
	if u.loopback && !isLoopback(c.nc.RemoteAddr()) {
		c.srv.loginRefused(c, name, "user may only connect via localhost")
		return c.refuse(amqp091.AccessRefused, "ACCESS_REFUSED - user '"+name+"' can only connect via localhost")
	}
	c.user = u
	hb := uint16(c.srv.opts.Heartbeat / time.Second)
	if err := c.writeMethodNow(0, &amqp091.ConnectionTune{ChannelMax: c.srv.opts.ChannelMax, FrameMax: c.srv.opts.FrameMax, Heartbeat: hb}); err != nil {
		return err
	}
	var to amqp091.ConnectionTuneOk
	if err := c.readMethodNow(&to); err != nil {
		return err
	}
	if to.FrameMax != 0 {
		if to.FrameMax < amqp091.FrameMinSize || to.FrameMax > c.srv.opts.FrameMax {
			return c.refuse(amqp091.SyntaxError, "SYNTAX_ERROR - frame_max out of range")
		}
		c.frameMax = to.FrameMax
	}
	if to.ChannelMax != 0 && to.ChannelMax < c.channelMax {
		c.channelMax = to.ChannelMax
	}
	c.heartbeat = time.Duration(to.Heartbeat) * time.Second
	c.fr.MaxFrame = c.frameMax
	var open amqp091.ConnectionOpen
	if err := c.readMethodNow(&open); err != nil {
		return err
	}
	vh := c.srv.vhost(open.VirtualHost)
	if vh == nil {
		return c.refuse(amqp091.NotAllowed, "NOT_ALLOWED - vhost "+open.VirtualHost+" not found")
	}
	if !u.vhostAllowed(vh.name) {
		c.srv.loginRefused(c, u.name, "no permissions on vhost "+vh.name)
		return c.refuse(amqp091.NotAllowed, "NOT_ALLOWED - access to vhost '"+vh.name+"' refused for user '"+u.name+"'")
	}
	c.vh = vh
	if !c.srv.admit(c) {
		return c.refuse(amqp091.NotAllowed, "NOT_ALLOWED - connection refused: node connection limit ("+strconv.Itoa(c.srv.opts.MaxConnections)+") is reached")
	}
	c.mon.opened(c, so.Mechanism)
	return c.writeMethodNow(0, &amqp091.ConnectionOpenOk{})
}

// refuse closes a connection that failed the handshake, with
// connection.close when the client understands it.
func (c *conn) refuse(code uint16, text string) error {
	if code != amqp091.AccessRefused || c.capAuthFail {
		_ = c.writeMethodNow(0, &amqp091.ConnectionClose{ReplyCode: code, ReplyText: text})
		// Give the client a moment to read it and answer close-ok.
		_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
		var ok amqp091.ConnectionCloseOk
		_ = c.readMethodNow(&ok)
	}
	return errors.New(text)
}

// signal makes sure pending output gets written: by this connection's
// reader at the end of its batch if it is in one, else by the writer.
func (c *conn) signal() {
	if c.batching.Load() {
		return
	}
	c.wakeWriter()
}

// kick is signal for output produced by another connection's reader (via),
// which flushes it at the end of its own batch.
func (c *conn) kick(via *conn) {
	if via == nil || via == c || !via.batching.Load() {
		c.signal()
		return
	}
	for _, t := range via.touched {
		if t == c {
			return
		}
	}
	via.touched = append(via.touched, c)
}

func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// inlineLimit bounds what a reader writes to a socket itself; more is
// left to the connection's writer so one slow peer cannot stall a reader
// for long.
const inlineLimit = 64 << 10

// inlineWriteWait bounds how long a reader's inline flush may block.
const inlineWriteWait = 5 * time.Millisecond

// stalledMerge puts back queues to restart after the next flush. Caller
// holds outMu.
func (c *conn) stalledMerge(m map[*queue]struct{}) {
	if len(m) == 0 {
		return
	}
	if c.stalled == nil {
		c.stalled = m
		return
	}
	for q := range m {
		c.stalled[q] = struct{}{}
	}
}

// endBatch flushes what this reader's batch produced, here and on the
// connections it delivered to.
func (c *conn) endBatch() {
	c.batching.Store(false)
	c.flushInline()
	for i, t := range c.touched {
		t.flushInline()
		c.touched[i] = nil
	}
	c.touched = c.touched[:0]
}

// flushInline writes pending output on the calling goroutine when no one
// else is writing and it is small; otherwise it wakes the writer.
func (c *conn) flushInline() {
	c.outMu.Lock()
	if c.flushing || c.flushDone || len(c.out) == 0 {
		c.outMu.Unlock()
		return
	}
	if len(c.out) > inlineLimit || c.batching.Load() || !c.inlineOK {
		c.outMu.Unlock()
		c.wakeWriter()
		return
	}
	c.flushing = true
	buf := c.out
	c.pending.Store(int64(len(buf)))
	c.out = c.spare[:0]
	c.spare = nil
	c.outLen.Store(0)
	stalled := c.stalled
	c.stalled = nil
	c.outMu.Unlock()
	// A reader must never block on a peer that stopped reading (it may be
	// waiting for us to read its own writes): what the socket does not take
	// at once (or within a short deadline where non-blocking writes are not
	// available) is handed to the writer goroutine.
	var n int
	var err error
	blocked := false
	if c.sock != nil {
		n, blocked, err = c.sock.TryWrite(buf)
	} else {
		_ = c.nc.SetWriteDeadline(time.Now().Add(inlineWriteWait))
		n, err = c.nc.Write(buf)
		_ = c.nc.SetWriteDeadline(time.Time{})
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			blocked, err = true, nil
		}
	}
	c.mon.sendOct.Add(uint64(n))
	c.outMu.Lock()
	c.flushing = false
	c.pending.Store(0)
	if blocked {
		rest := append(buf[n:len(buf):len(buf)], c.out...)
		c.out = rest
		c.outLen.Store(int64(len(c.out)))
		c.stalledMerge(stalled)
		c.outMu.Unlock()
		c.wakeWriter()
		return
	}
	if err != nil {
		c.flushDone = true
		c.out = nil
		c.outMu.Unlock()
		_ = c.nc.Close()
		c.wakeWriter()
		c.signalDrained()
		return
	}
	if c.spare == nil && cap(buf) <= 4<<20 {
		c.spare = buf[:0]
	}
	more := len(c.out) > 0 || c.closeOut
	c.outMu.Unlock()
	if more {
		c.wakeWriter()
	}
	c.signalDrained()
	for q := range stalled {
		q.dispatch(nil)
	}
}

func (c *conn) signalDrained() {
	select {
	case c.drained <- struct{}{}:
	default:
	}
}

// backlog is the output not yet taken by the socket.
func (c *conn) backlog() int64 {
	return c.outLen.Load() + c.pending.Load()
}

// waitForRoom is the reader's back-pressure: while the output backlog is
// above outReadStop it reads nothing more from the client. It returns
// false when the writer gave up (the client took nothing for
// WriteTimeout) or the connection is ending.
func (c *conn) waitForRoom() bool {
	c.flushConfirms()
	c.endBatch()
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	for {
		c.outMu.Lock()
		over, dead := c.backlog() > outReadStop, c.flushDone
		c.outMu.Unlock()
		if dead {
			return false
		}
		if !over {
			return true
		}
		c.wakeWriter()
		// drained comes after every write; the timer only guards
		// against a wake-up lost to a writer that was busy.
		select {
		case <-c.drained:
		case <-t.C:
			t.Reset(100 * time.Millisecond)
		}
	}
}

// send appends one method frame to the output.
func (c *conn) send(ch uint16, m amqp091.Method) {
	c.outMu.Lock()
	if !c.flushDone {
		c.out = amqp091.AppendMethodFrame(c.out, ch, m)
		c.outLen.Store(int64(len(c.out)))
	}
	c.outMu.Unlock()
	c.signal()
}

// sendContent appends a method with content (deliver, get-ok, return).
func (c *conn) sendContent(ch uint16, m amqp091.Method, msg *message, props []byte) {
	if props == nil {
		props = msg.props
	}
	c.outMu.Lock()
	if !c.flushDone {
		c.out = amqp091.AppendMethodFrame(c.out, ch, m)
		c.out = amqp091.AppendHeaderFrame(c.out, ch, amqp091.ClassBasic, uint64(len(msg.body)), props)
		c.out = amqp091.AppendBodyFrames(c.out, ch, msg.body, c.frameMax)
		c.outLen.Store(int64(len(c.out)))
	}
	c.outMu.Unlock()
	c.signal()
}

// stall records that q stopped delivering here because the output backlog
// is high; the writer restarts it after a flush.
func (c *conn) stall(q *queue) {
	c.outMu.Lock()
	if c.stalled == nil {
		c.stalled = map[*queue]struct{}{}
	}
	c.stalled[q] = struct{}{}
	c.outMu.Unlock()
}

func (c *conn) writeLoop() {
	defer c.writerWG.Done()
	var tick <-chan time.Time
	if c.heartbeat > 0 {
		t := time.NewTicker(c.heartbeat / 2)
		defer t.Stop()
		tick = t.C
	}
	wrote := false
	for {
		select {
		case <-c.wake:
		case <-tick:
			if !wrote {
				c.outMu.Lock()
				c.out = amqp091.AppendHeartbeat(c.out)
				c.outMu.Unlock()
			}
			wrote = false
		}
		c.outMu.Lock()
		if c.flushing {
			// An inline flush is writing; it wakes us if more is pending.
			c.outMu.Unlock()
			continue
		}
		if c.flushDone {
			c.outMu.Unlock()
			return
		}
		buf := c.out
		c.pending.Store(int64(len(buf)))
		c.out = c.spare[:0]
		c.spare = nil
		c.outLen.Store(0)
		stalled := c.stalled
		c.stalled = nil
		closeAfter := c.closeOut
		c.flushing = true
		c.outMu.Unlock()
		if len(buf) > 0 {
			wrote = true
			if err := c.write(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && c.finalBy.Load() == 0 {
					c.log.Info("client took no data for the write timeout, closing", "timeout", c.srv.opts.WriteTimeout)
				}
				c.outMu.Lock()
				c.flushing = false
				c.pending.Store(0)
				c.flushDone = true
				c.out = nil
				c.outMu.Unlock()
				_ = c.nc.Close()
				c.signalDrained()
				return
			}
		}
		c.outMu.Lock()
		c.flushing = false
		c.pending.Store(0)
		if c.spare == nil && cap(buf) <= 4<<20 {
			c.spare = buf[:0]
		}
		if closeAfter && len(c.out) == 0 {
			c.flushDone = true
			c.outMu.Unlock()
			c.signalDrained()
			return
		}
		if len(c.out) > 0 || c.closeOut {
			c.wakeWriter()
		}
		c.outMu.Unlock()
		c.signalDrained()
		for q := range stalled {
			q.dispatch(nil)
		}
	}
}

// write writes buf whole, waiting for the client as long as it keeps
// taking data: it fails once the client took nothing for WriteTimeout (as
// nats-server's write deadline), or at the deadline cleanup set.
func (c *conn) write(buf []byte) error {
	for len(buf) > 0 {
		if c.sock != nil {
			// No deadline timer while the socket takes everything.
			n, blocked, err := c.sock.TryWrite(buf)
			c.mon.sendOct.Add(uint64(n))
			buf = buf[n:]
			if err != nil || !blocked {
				return err
			}
			_ = c.nc.SetWriteDeadline(c.writeDeadline())
			n, err = c.sock.Write(buf)
			// A deadline left in the past would fail the next TryWrite.
			_ = c.nc.SetWriteDeadline(time.Time{})
			c.mon.sendOct.Add(uint64(n))
			buf = buf[n:]
			if err != nil && (n == 0 || !errors.Is(err, os.ErrDeadlineExceeded) || c.finalBy.Load() != 0) {
				return err
			}
			continue
		}
		// A timed-out tls.Conn cannot be written again: each chunk gets a
		// fresh deadline and the first timeout ends the connection.
		chunk := buf[:min(len(buf), writeChunk)]
		_ = c.nc.SetWriteDeadline(c.writeDeadline())
		n, err := c.nc.Write(chunk)
		c.mon.sendOct.Add(uint64(n))
		buf = buf[n:]
		if err != nil {
			return err
		}
	}
	return nil
}

// writeDeadline is WriteTimeout from now, or cleanup's final deadline if
// that is sooner.
func (c *conn) writeDeadline() time.Time {
	d := time.Now().Add(c.srv.opts.WriteTimeout)
	if f := c.finalBy.Load(); f != 0 && f < d.UnixNano() {
		return time.Unix(0, f)
	}
	return d
}

// connError closes the connection with a hard error.
func (c *conn) connError(e *amqpError) {
	if c.closing {
		return
	}
	c.closing = true
	c.log.Info("connection error", "code", e.code, "text", e.text)
	c.sendClose(&amqp091.ConnectionClose{ReplyCode: e.code, ReplyText: e.text, ClassId: e.classID, MethodId: e.methodID})
}

// sendClose queues connection.close unless one was sent already (a
// protocol error racing with shutdown gets one close, as from RabbitMQ).
func (c *conn) sendClose(m *amqp091.ConnectionClose) {
	c.outMu.Lock()
	if !c.closeSent && !c.flushDone {
		c.closeSent = true
		c.out = amqp091.AppendMethodFrame(c.out, 0, m)
		c.outLen.Store(int64(len(c.out)))
	}
	c.outMu.Unlock()
	c.signal()
}

// closeWasSent reports whether connection.close went out, from this
// reader or from Shutdown.
func (c *conn) closeWasSent() bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.closeSent
}

func (c *conn) readLoop() error {
	var closeDeadline, lastDeadline time.Time
	for {
		if c.fr.Buffered() == 0 {
			switch {
			case c.closing:
				if closeDeadline.IsZero() {
					closeDeadline = time.Now().Add(5 * time.Second)
					if f := c.finalBy.Load(); f != 0 && f < closeDeadline.UnixNano() {
						closeDeadline = time.Unix(0, f) // Shutdown's grace
					}
				}
				_ = c.nc.SetReadDeadline(closeDeadline)
			case c.heartbeat > 0:
				// Refreshing the deadline costs a timer update; doing it at
				// most every half interval keeps dead-peer detection between
				// 1.5 and 2 intervals.
				if now := time.Now(); now.Sub(lastDeadline) > c.heartbeat/2 {
					lastDeadline = now
					_ = c.nc.SetReadDeadline(now.Add(2*c.heartbeat + time.Second))
				}
			}
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			if errors.Is(err, amqp091.ErrFrameTooLarge) || errors.Is(err, amqp091.ErrMalformed) {
				// What follows cannot be framed: no close-ok can be read.
				c.connError(errf(amqp091.FrameError, "%v", err))
				c.drainInput = true
			} else if errors.Is(err, os.ErrDeadlineExceeded) && !c.closing && !c.closeWasSent() {
				c.log.Info("missed heartbeats from client, closing")
			}
			// The batch the previous frames opened must end here, or its
			// output (this connection.close) would wait for a wake-up
			// that no one sends.
			c.flushConfirms()
			c.endBatch()
			return err
		}
		c.batching.Store(true)
		done := c.handleFrame(f)
		if done {
			c.endBatch()
			return nil
		}
		if c.fr.Buffered() == 0 {
			c.flushConfirms()
			c.endBatch()
		}
		if c.srv.shuttingDown.Load() && !c.closing {
			// Shutdown sent connection.close 320 (hangup); wait for
			// close-ok as after any close.
			c.closing = true
			c.sendClose(&amqp091.ConnectionClose{ReplyCode: amqp091.ConnectionForced, ReplyText: shutdownText})
		}
		if c.backlog() > outReadStop && !c.waitForRoom() {
			return errStuckPeer
		}
	}
}

const shutdownText = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"

// handleFrame processes one frame; it reports whether the connection is
// finished.
func (c *conn) handleFrame(f amqp091.Frame) bool {
	switch f.Type {
	case amqp091.FrameHeartbeat:
		if f.Channel != 0 {
			// As RabbitMQ: heartbeats belong to channel 0.
			c.connError(errf(amqp091.UnexpectedFrame, "heartbeat frame on channel %d", f.Channel))
		}
		return false
	case amqp091.FrameMethod, amqp091.FrameHeader, amqp091.FrameBody:
	default:
		c.connError(errf(amqp091.FrameError, "unknown frame type %d", f.Type))
		return false
	}
	if f.Channel == 0 {
		if f.Type != amqp091.FrameMethod {
			c.connError(errf(amqp091.UnexpectedFrame, "content frame on channel 0"))
			return false
		}
		return c.handleConnMethod(f.Payload)
	}
	if c.closing {
		return false
	}
	ch := c.channels[f.Channel]
	if ch == nil {
		if f.Type != amqp091.FrameMethod {
			c.connError(errf(amqp091.ChannelError, "content frame on unopened channel %d", f.Channel))
			return false
		}
		cid, mid, _, err := amqp091.ParseMethodFrame(f.Payload)
		if err != nil {
			c.connError(errf(amqp091.FrameError, "%v", err))
			return false
		}
		if cid == amqp091.ClassChannel && mid == 41 {
			// A close-ok crossing our close-ok after a simultaneous close.
			return false
		}
		if cid != amqp091.ClassChannel || mid != 10 {
			c.connError(&amqpError{code: amqp091.ChannelError, text: "CHANNEL_ERROR - expected 'channel.open'", classID: cid, methodID: mid})
			return false
		}
		if f.Channel > c.channelMax {
			c.connError(&amqpError{code: amqp091.NotAllowed, text: "NOT_ALLOWED - channel number above negotiated channel_max", classID: cid, methodID: mid})
			return false
		}
		c.channels[f.Channel] = newChannel(c, f.Channel)
		c.mon.addChannel(c.channels[f.Channel])
		if !c.mon.internal.Load() {
			c.srv.churn.chanCreated.Add(1)
		}
		c.send(f.Channel, &amqp091.ChannelOpenOk{})
		return false
	}
	if err := ch.handleFrame(f); err != nil {
		if err.hard() {
			c.connError(err)
		} else {
			ch.channelError(err)
		}
	}
	return false
}

func (c *conn) handleConnMethod(p []byte) bool {
	cid, mid, args, err := amqp091.ParseMethodFrame(p)
	if err != nil {
		c.connError(errf(amqp091.FrameError, "%v", err))
		return false
	}
	m, err := c.dec.Decode(cid, mid, args)
	if err != nil {
		c.connError(&amqpError{code: amqp091.SyntaxError, text: "SYNTAX_ERROR - " + err.Error(), classID: cid, methodID: mid})
		return false
	}
	switch m := m.(type) {
	case *amqp091.ConnectionClose:
		c.log.Debug("client closed connection", "code", m.ReplyCode)
		// As RabbitMQ does, close-ok follows the channels' end: once the
		// client has it, its unacknowledged messages are back in their
		// queues and its exclusive queues are gone.
		c.releaseChannels()
		c.send(0, &amqp091.ConnectionCloseOk{})
		return true
	case *amqp091.ConnectionCloseOk:
		return c.closing || c.closeWasSent()
	case *amqp091.ConnectionBlocked, *amqp091.ConnectionUnblocked:
		return false
	default:
		if c.closing {
			return false
		}
		c.connError(&amqpError{code: amqp091.CommandInvalid, text: "COMMAND_INVALID - unexpected method " + m.Name() + " on channel 0", classID: cid, methodID: mid})
		return false
	}
}

// flushConfirms emits confirms gathered while processing a batch of input.
func (c *conn) flushConfirms() {
	for _, ch := range c.channels {
		if ch.confirm {
			ch.flushConfirms()
		}
	}
}

// waitUnblocked applies the memory alarm: a publishing connection stops
// reading until counted memory falls below the watermark.
func (c *conn) waitUnblocked() {
	s := c.srv
	if !s.alarm.Load() {
		return
	}
	if c.capBlocked && !c.blockedSent {
		c.blockedSent = true
		c.send(0, &amqp091.ConnectionBlocked{Reason: "low on memory"})
	}
	// The batch stops here: flush connection.blocked, earlier replies and
	// what it delivered to consumers, whose acks may be what clears the
	// alarm.
	c.flushConfirms()
	c.endBatch()
	s.alarmMu.Lock()
	for s.alarm.Load() && !s.shuttingDown.Load() {
		s.alarmCond.Wait()
	}
	s.alarmMu.Unlock()
	c.batching.Store(true)
	if c.blockedSent {
		c.blockedSent = false
		c.send(0, &amqp091.ConnectionUnblocked{})
	}
}
