package rabbit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/internal/testrabbit"
)

// TestChannelErrorFailsOnlyItsPublisher: while eight callers and a server
// exchange calls and replies on the same connections, other calls are
// published that the broker refuses with a channel error (403 on
// RabbitMQ: a user without write permission on the exchange; 406 on the
// embedded broker: a message over its size limit), from the client and
// from inside the server's handler. Every other call completes; each
// refused call fails at once with the broker's error, not a timeout.
func TestChannelErrorFailsOnlyItsPublisher(t *testing.T) {
	t.Run("rabbitmq", func(t *testing.T) {
		user := "oslogo_ack_" + newHexID()[:8]
		rabbitmqctl(t, "add_user", user, "pw")
		t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "delete_user", user).Run() })
		rabbitmqctl(t, "set_permissions", "-p", testrabbit.Vhost(), user, ".*", "^(?!forbidden_).*", ".*")
		tu, err := ParseURL(testURL())
		if err != nil {
			t.Fatal(err)
		}
		raw := "rabbit://" + user + ":pw@" + tu.Hosts[0].Addr + "/" + url.PathEscape(testrabbit.Vhost())
		forbidden := "forbidden_" + newHexID()[:8]
		ch, err := amqpConn(t).Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.ExchangeDeclare(forbidden, "topic", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ch.ExchangeDelete(forbidden, false, false) })
		topic := uniqueTopic(t)
		refused := func(ctx context.Context, d *Driver) error {
			_, err := d.Call(ctx, driver.Target{Exchange: forbidden, Topic: topic}, &driver.Request{Method: "echo"}, driver.SendOptions{Timeout: 15 * time.Second})
			return err
		}
		channelErrorScenario(t, openString(t, raw, nil), openString(t, raw, nil), topic, refused, "403")
		cleanupQueues(t, topic, topic+".s")
	})
	t.Run("embedded", func(t *testing.T) {
		addr := startEmbeddedBroker(t, func(o *broker.Options) { o.MaxMessageSize = 256 << 10 })
		raw := "rabbit://guest:guest@" + addr + "/"
		topic := uniqueTopic(t)
		big := json.RawMessage(`{"s": "` + strings.Repeat("x", 512<<10) + `"}`)
		refused := func(ctx context.Context, d *Driver) error {
			_, err := d.Call(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, &driver.Request{Method: "echo", Args: big}, driver.SendOptions{Timeout: 15 * time.Second})
			return err
		}
		channelErrorScenario(t, openString(t, raw, nil), openString(t, raw, nil), topic, refused, "406")
	})
}

func channelErrorScenario(t *testing.T, srv, cli *Driver, topic string, refused func(context.Context, *Driver) error, code string) {
	ctx := ctxT(t, 3*time.Minute)
	l, err := srv.Listen(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, func(r driver.IncomingRequest) *driver.Reply {
		if r.Request().Method == "relay" {
			// The server's own refused call shares its send connection
			// with the replies of the other calls.
			err := refused(ctx, srv)
			return &driver.Reply{Result: json.RawMessage(strconv.Quote(fmt.Sprint(err)))}
		}
		return echoHandler(r)
	})
	defer func() { _ = l.Close(); wg.Wait() }()

	checkRefused := func(what string, err error, start time.Time) {
		t.Helper()
		if err == nil || errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), code) {
			t.Errorf("%s: %v, want the broker's %s error", what, err, code)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("%s: failed after %s, not at once", what, el)
		}
	}
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	var calls sync.WaitGroup
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	for c := range 8 {
		calls.Add(1)
		go func() {
			defer calls.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				args := json.RawMessage(fmt.Sprintf(`{"c": %d, "i": %d}`, c, i))
				rep, err := cli.Call(ctx, target, &driver.Request{Method: "echo", Args: args}, driver.SendOptions{Timeout: 20 * time.Second})
				if err != nil || rep.Failure != nil || string(rep.Result) != string(args) {
					failed.Add(1)
					t.Errorf("call %s: %v %+v", args, err, rep)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := 0; i < 10 && !t.Failed(); i++ {
		start := time.Now()
		checkRefused(fmt.Sprintf("client's refused call %d", i), refused(ctx, cli), start)
		start = time.Now()
		rep, err := cli.Call(ctx, target, &driver.Request{Method: "relay"}, driver.SendOptions{Timeout: 30 * time.Second})
		if err != nil {
			t.Errorf("relay %d: %v", i, err)
			continue
		}
		var inner string
		_ = json.Unmarshal(rep.Result, &inner)
		checkRefused(fmt.Sprintf("server's refused call %d", i), errors.New(inner), start)
	}
	close(stop)
	calls.Wait()
	t.Logf("%d calls completed, %d failed, beside 20 refused publishes", ok.Load(), failed.Load())
	if ok.Load() == 0 {
		t.Fatal("no call completed")
	}
}
