//go:build faults

package faults

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

// sendConns lists the send connections (connection_name "...:send-N:...")
// of this cluster, all processes and transports together, as the pid
// RabbitMQ gives each (<node.a.b.c>, which names its node).
func (c *rabbitCluster) sendConns() map[string]bool {
	for _, n := range c.nodes {
		if n.pid == 0 {
			continue
		}
		out, err := c.ctl(n, "list_connections", "-q", "pid", "client_properties")
		if err != nil {
			continue
		}
		pids := map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.Contains(line, ":send-") {
				pids[f[0]] = true
			}
		}
		return pids
	}
	return nil
}

// openClientOn opens the scenario's client transport so that its send
// connection is on node n, when it can (the driver shuffles the URL's
// hosts, so it tries up to 8 transports): the issue-10 case, where the
// client's send connection dies with the node of the server's consumer
// and the quorum queues' leader, and comes back at once on another node.
// The server's own send connection must exist already (warm the server up
// with another client first). log is the transport's logger.
func openClientOn(t *testing.T, c *rabbitCluster, n *rabbitNode, opts map[string]string, target messaging.Target, log *slog.Logger) (*messaging.Transport, *messaging.RPCClient, bool) {
	t.Helper()
	before := c.sendConns()
	for try := 1; ; try++ {
		cfg := messaging.DefaultTransportConfig()
		cfg.DriverConfig = opts
		cfg.Logger = log
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		tr, err := messaging.OpenTransport(ctx, c.url(), cfg)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		cli := messaging.NewRPCClient(tr, target)
		warmUp(t, cli)
		on, mine := false, []string{}
		for pid := range c.sendConns() {
			if !before[pid] {
				mine = append(mine, pid)
				on = on || strings.HasPrefix(pid, "<"+n.name+".")
			}
		}
		if on || try == 8 {
			t.Logf("client transport %d: its send connection on %s: %v %v", try, n.name, on, mine)
			return tr, cli, on
		}
		_ = tr.Close()
	}
}

// countingHandler counts the records whose message is msg and passes every
// record on to next (nil: none).
type countingHandler struct {
	msg  string
	n    *atomic.Int64
	next slog.Handler
}

func newCountingLogger(msg string) (*slog.Logger, *atomic.Int64) {
	h := &countingHandler{msg: msg, n: new(atomic.Int64)}
	if os.Getenv("FAULTS_VERBOSE") != "" {
		h.next = slog.NewTextHandler(os.Stderr, nil)
	}
	return slog.New(h), h.n
}

func (h *countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	if h.next != nil {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	if h.next != nil {
		c.next = h.next.WithAttrs(as)
	}
	return &c
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	c := *h
	if h.next != nil {
		c.next = h.next.WithGroup(name)
	}
	return &c
}
