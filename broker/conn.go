package broker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"oslogo/broker/internal/amqp091"
	"oslogo/internal/rawsock"
)

// outHighWater is the output backlog above which queues stop delivering to
// a connection until its writer catches up.
const outHighWater = 1 << 20

type conn struct {
	srv *Server
	nc  net.Conn
	// sock is nc's socket, read and written with raw system calls (see
	// package rawsock), or nil (TLS, in-process pipes) to use nc.
	sock *rawsock.Socket
	id   uint64
	log  *slog.Logger

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
}

func newConn(srv *Server, nc net.Conn, id uint64) *conn {
	c := &conn{srv: srv, nc: nc, id: id, log: srv.log.With("conn", id),
		frameMax: srv.opts.FrameMax, channelMax: srv.opts.ChannelMax,
		channels: map[uint16]*channel{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.sock = rawsock.Of(nc)
	var r io.Reader = nc
	if c.sock != nil {
		r = c.sock
	}
	c.br = bufio.NewReaderSize(r, 64<<10)
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
	go c.writeLoop()
	err := c.readLoop()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
		c.log.Debug("connection ended", "err", err)
	}
}

func (c *conn) cleanup() {
	// Stop the writer after it flushes what is queued (close-ok, errors).
	c.outMu.Lock()
	c.closeOut = true
	c.outMu.Unlock()
	c.signal()
	close(c.done)
	// A client that stopped reading must not hold the writer forever.
	_ = c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.writerWG.Wait()
	_ = c.nc.Close()
	c.releaseChannels()
	c.srv.removeConn(c)
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
	_, err := c.nc.Write(amqp091.AppendMethodFrame(nil, ch, m))
	return err
}

func (c *conn) readMethodNow(want amqp091.Method) error {
	f, err := c.fr.ReadFrame()
	if err != nil {
		return err
	}
	if f.Type == amqp091.FrameHeartbeat {
		return c.readMethodNow(want)
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
				"consumer_priorities":          false,
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
		return c.refuse(amqp091.AccessRefused, "ACCESS_REFUSED - mechanism "+so.Mechanism+" or its response is not supported")
	}
	u := c.srv.lookupUser(name)
	if u == nil || !u.checkPassword(pw) {
		c.log.Info("authentication failed", "user", name)
		return c.refuse(amqp091.AccessRefused, "ACCESS_REFUSED - Login was refused using authentication mechanism "+so.Mechanism+". For details see the broker logfile.")
	}
	if u.loopback && !isLoopback(c.nc.RemoteAddr()) {
		c.log.Info("loopback-only user refused", "user", name)
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
		return c.refuse(amqp091.NotAllowed, "NOT_ALLOWED - access to vhost '"+vh.name+"' refused for user '"+u.name+"'")
	}
	c.vh = vh
	if !c.srv.admit(c) {
		return c.refuse(amqp091.NotAllowed, "NOT_ALLOWED - connection limit reached")
	}
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
	if len(c.out) > inlineLimit || c.batching.Load() {
		c.outMu.Unlock()
		c.wakeWriter()
		return
	}
	c.flushing = true
	buf := c.out
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
	c.outMu.Lock()
	c.flushing = false
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
	for q := range stalled {
		q.dispatch(nil)
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
			if _, err := c.write(buf); err != nil {
				c.outMu.Lock()
				c.flushing = false
				c.flushDone = true
				c.out = nil
				c.outMu.Unlock()
				_ = c.nc.Close()
				return
			}
		}
		c.outMu.Lock()
		c.flushing = false
		if c.spare == nil && cap(buf) <= 4<<20 {
			c.spare = buf[:0]
		}
		if closeAfter && len(c.out) == 0 {
			c.flushDone = true
			c.outMu.Unlock()
			return
		}
		if len(c.out) > 0 || c.closeOut {
			c.wakeWriter()
		}
		c.outMu.Unlock()
		for q := range stalled {
			q.dispatch(nil)
		}
	}
}

// write writes buf whole, waiting for the peer as long as it takes.
func (c *conn) write(buf []byte) (int, error) {
	if c.sock != nil {
		return c.sock.Write(buf)
	}
	return c.nc.Write(buf)
}

// connError closes the connection with a hard error.
func (c *conn) connError(e *amqpError) {
	if c.closing {
		return
	}
	c.closing = true
	c.log.Info("connection error", "code", e.code, "text", e.text)
	c.send(0, &amqp091.ConnectionClose{ReplyCode: e.code, ReplyText: e.text, ClassId: e.classID, MethodId: e.methodID})
}

func (c *conn) readLoop() error {
	var closeDeadline, lastDeadline time.Time
	for {
		if c.fr.Buffered() == 0 {
			switch {
			case c.closing:
				if closeDeadline.IsZero() {
					closeDeadline = time.Now().Add(5 * time.Second)
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
			if errors.Is(err, amqp091.ErrFrameTooLarge) {
				c.connError(errf(amqp091.FrameError, "%v", err))
				return err
			}
			if errors.Is(err, amqp091.ErrMalformed) {
				c.connError(errf(amqp091.FrameError, "%v", err))
				return err
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && !c.closing {
				c.log.Info("missed heartbeats from client, closing")
			}
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
			c.connError(errf(amqp091.ConnectionForced, "broker forced connection closure with reason 'shutdown'"))
		}
	}
}

// handleFrame processes one frame; it reports whether the connection is
// finished.
func (c *conn) handleFrame(f amqp091.Frame) bool {
	switch f.Type {
	case amqp091.FrameHeartbeat:
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
		return c.closing
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
	// The batch stops here: flush connection.blocked and what it
	// delivered to consumers, whose acks may be what clears the alarm.
	c.endBatch()
	s.alarmMu.Lock()
	for s.alarm.Load() && !s.shuttingDown.Load() {
		s.alarmCond.Wait()
	}
	s.alarmMu.Unlock()
	if c.blockedSent {
		c.blockedSent = false
		c.send(0, &amqp091.ConnectionUnblocked{})
	}
}
