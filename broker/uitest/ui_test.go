// Package uitest drives the broker's web UI in headless Chromium
// (Debian's chromium, installed by scripts/setup.d/50-chromium.sh) with
// chromedp.
package uitest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/broker"
	_ "github.com/oslogo/oslogo/driver/rabbit" // registers rabbit://
	"github.com/oslogo/oslogo/messaging"
)

const chromiumPath = "/usr/bin/chromium"

// screenshotsEnv set to 1 copies the screenshots into docs/screenshots.
const screenshotsEnv = "OSLOGO_SCREENSHOTS"

// buildOslogo builds cmd/oslogo into dir.
func buildOslogo(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "oslogo")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/oslogo/oslogo/cmd/oslogo")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/oslogo: %v\n%s", err, out)
	}
	return bin
}

func startBroker(t *testing.T) (*broker.Server, string) {
	t.Helper()
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.HTTPAddr = "127.0.0.1:0"
	s, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("broker not ready")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, "amqp://guest:guest@" + s.Addr().String() + "/"
}

// traffic keeps a little RPC, notification and plain AMQP traffic going
// so that the charts and the oslo view have something to show; it stops
// when ctx ends.
func traffic(ctx context.Context, t *testing.T, amqpURL string, wg *sync.WaitGroup) {
	t.Helper()
	rabbitURL := strings.Replace(amqpURL, "amqp://", "rabbit://", 1)
	tr, err := messaging.OpenTransport(ctx, rabbitURL, messaging.DefaultTransportConfig())
	if err != nil {
		t.Fatal(err)
	}
	listener, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: "notifications"}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{
			messaging.PriorityInfo: func(context.Context, *messaging.Notification) messaging.NotificationResult { return messaging.Handled },
		}}}, messaging.WithPool("ui-pool"))
	if err != nil {
		t.Fatal(err)
	}
	if err := listener.Start(ctx); err != nil {
		t.Fatal(err)
	}
	notifier, err := messaging.NewNotifier(tr, "uitest.host", messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2))
	if err != nil {
		t.Fatal(err)
	}
	client := messaging.NewRPCClient(tr, messaging.Target{Topic: "uitest"}, messaging.WithTimeout(5*time.Second))
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("ui-traffic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume("ui-traffic", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range deliveries {
		}
	}()
	go func() {
		defer wg.Done()
		defer func() {
			stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = listener.Stop(stop)
			_ = tr.Close()
			_ = conn.Close()
		}()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n := 1 + i%7
			for range n {
				_ = ch.PublishWithContext(ctx, "", "ui-traffic", false, false, amqp.Publishing{Body: []byte(strings.Repeat("x", 200*n))})
			}
			if i%5 == 0 {
				_, _ = messaging.Call[any](ctx, client, "echo", map[string]any{"data": i})
				_ = notifier.Info(ctx, "uitest.tick", map[string]any{"i": i})
			}
		}
	}()
}

// TestWebUI logs in to the broker's web UI in headless Chromium, sees a
// queue filled by amqp091-go with its count, purges it with a click and
// sees the count drop to 0, and finds a running `oslogo serve` under its
// topic in the oslo view; it takes a screenshot of every page, and checks
// that the page sent no request to another origin.
func TestWebUI(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v (scripts/setup.d/50-chromium.sh installs it)", chromiumPath, err)
	}
	tmp := t.TempDir()
	bin := buildOslogo(t, tmp)
	s, amqpURL := startBroker(t)
	base := "http://" + s.HTTPAddr().String()

	// A queue with 25 messages.
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	const queue = "ui-test-queue"
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		if err := ch.Publish("", queue, false, false, amqp.Publishing{ContentType: "application/json",
			Body: fmt.Appendf(nil, `{"n":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}

	// A topic nobody serves and a reply queue nobody reads, with a reply
	// waiting: the oslo view flags both.
	if err := ch.ExchangeDeclare("openstack", "topic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("orphan", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("orphan", "orphan", "openstack", false, nil); err != nil {
		t.Fatal(err)
	}
	const lostReply = "reply_0123456789abcdef0123456789abcdef"
	if _, err := ch.QueueDeclare(lostReply, false, false, false, false, amqp.Table{"x-expires": int32(1800000)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", lostReply, false, false, amqp.Publishing{Body: []byte(`{"oslo.version": "2.0"}`)}); err != nil {
		t.Fatal(err)
	}

	// oslogo serve, the example RPC server, on topic uitest.
	rabbitURL := strings.Replace(amqpURL, "amqp://", "rabbit://", 1)
	serve := exec.Command(bin, "serve", "--url", rabbitURL, "--topic", "uitest", "--server", "uiserver")
	var serveOut strings.Builder
	serve.Stdout, serve.Stderr = &serveOut, &serveOut
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- serve.Wait() }()
	t.Cleanup(func() {
		_ = serve.Process.Signal(os.Interrupt)
		select {
		case <-serveDone:
		case <-time.After(10 * time.Second):
			_ = serve.Process.Kill()
			<-serveDone
		}
	})
	waitFor(t, "oslogo serve on topic uitest", func() bool {
		z, err := s.Osloz(broker.OslozOptions{})
		if err != nil {
			return false
		}
		for _, tp := range z.RPCTopics {
			if tp.Topic == "uitest" && !tp.NoServer {
				return true
			}
		}
		select {
		case err := <-serveDone:
			t.Fatalf("oslogo serve exited: %v\n%s", err, serveOut.String())
		default:
		}
		return false
	})

	tctx, stopTraffic := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	traffic(tctx, t, amqpURL, &wg)
	defer wg.Wait()
	defer stopTraffic()

	// Headless Chromium with a fresh profile.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(tmp, "chromium-profile")),
		chromedp.WindowSize(1280, 900),
	)...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	var reqMu sync.Mutex
	var foreign []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			u, err := url.Parse(e.Request.URL)
			if err != nil || (u.Scheme != "data" && "http://"+u.Host != base) {
				reqMu.Lock()
				foreign = append(foreign, e.Request.URL)
				reqMu.Unlock()
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}

	shots := map[string][]byte{}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			shots[name] = buf
			return nil
		})
	}
	poll := func(js string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))(ctx, tg)
			return err
		})
	}
	// textIs waits until the element's trimmed text is want.
	textIs := func(sel, want string) chromedp.Action[chromedp.Void] {
		return poll(fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.trim() === %q; })()`, sel, want))
	}
	contains := func(sel, want string) chromedp.Action[chromedp.Void] {
		return poll(fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want))
	}
	eval := func(js string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](js)(ctx, tg)
			if errors.Is(err, chromedp.ErrJSUndefined) || errors.Is(err, chromedp.ErrJSNull) {
				return nil
			}
			return err
		})
	}
	page := func(hash string) chromedp.Action[chromedp.Void] { return eval(fmt.Sprintf(`location.hash = %q`, hash)) }
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	run := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage text:\n%s", step, err, body)
		}
	}
	getStored := func() string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('oslogo.auth') || ''`))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	qrow := `tr[data-queue="/|` + queue + `"]`
	run("login page", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#login-user")),
		poll(`document.querySelector('#session').offsetParent === null && document.querySelector('#nav').offsetParent === null`),
		shot("login"))
	run("wrong password",
		chromedp.SendKeys(css("#login-user"), "guest"),
		chromedp.SendKeys(css("#login-pass"), "wrong"),
		chromedp.Click(css("#login-submit")),
		textIs("#login-error", "Login failed"))
	run("log in",
		eval(`document.querySelector('#login-pass').value = ''`),
		chromedp.SendKeys(css("#login-pass"), "guest"),
		chromedp.Click(css("#login-submit")),
		chromedp.WaitVisible(css("#nav")),
		contains("#who", "guest"),
		eval(`(() => { const s = document.querySelector('#refresh'); s.value = '2000'; s.dispatchEvent(new Event('change')); })()`))
	if stored := getStored(); !strings.HasPrefix(stored, "Basic ") {
		t.Fatalf("sessionStorage oslogo.auth = %q", stored)
	}
	run("overview", chromedp.WaitVisible(css("#chart-queued")), chromedp.Sleep(9*time.Second), contains("#listeners", "amqp"), shot("overview"))

	run("queues page", page("#/queues"), textIs(qrow+" td.messages", "25"), textIs(qrow+" td.ready", "25"), shot("queues"))
	run("queue page",
		chromedp.Click(css(qrow+" td.name a")),
		textIs("#q-messages", "25"),
		chromedp.Click(css("#get-submit")),
		contains("#get-result", `{"n":0}`),
		shot("queue"))
	run("purge", chromedp.Click(css("#purge")), textIs("#purge-result", "Queue purged."), textIs("#q-messages", "0"))
	run("queues after purge", page("#/queues"), textIs(qrow+" td.messages", "0"))
	if qs, err := s.Queues(broker.QueuesOptions{VHost: "/", Name: queue}); err != nil || qs[0].Messages != 0 {
		t.Fatalf("broker after purge: %+v %v", qs, err)
	}

	run("connections", page("#/connections"), contains("#connections", "oslogo"), shot("connections"))
	run("channels", page("#/channels"), contains("#channels", "(1)"), shot("channels"))
	run("exchanges", page("#/exchanges"), contains(`tr[data-exchange="/|openstack"]`, "topic"), shot("exchanges"))
	run("oslo view", page("#/oslo"),
		contains(`tr[data-topic="uitest"] td.servers`, "uiserver"),
		contains(`tr[data-topic="uitest"] td.servers`, "oslogo:"),
		contains(`tr[data-notification="notifications.info"]`, "ui-pool"),
		contains(`li[data-problem="no_server|orphan"]`, "no server"),
		contains(`tr[data-reply="`+lostReply+`"]`, "unread"),
		chromedp.Sleep(2500*time.Millisecond),
		shot("oslo"))
	// Policies show where the broker answers GET /api/policies.
	req, err := http.NewRequest("GET", base+"/api/policies", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	policiesShown := "false"
	if resp.StatusCode == http.StatusOK {
		policiesShown = "true"
	}
	run("admin", page("#/admin"), contains(`tr[data-user="guest"]`, "administrator"), contains("#admin-permissions", ".*"),
		poll(`!document.querySelector('#policies-heading').hidden === `+policiesShown), shot("admin"))
	run("log out", chromedp.Click(css("#logout")), chromedp.WaitVisible(css("#login-user")))
	if stored := getStored(); stored != "" {
		t.Fatal("credentials left in sessionStorage after log out")
	}

	reqMu.Lock()
	if len(foreign) > 0 {
		t.Errorf("the UI sent requests to other origins: %v", foreign)
	}
	reqMu.Unlock()

	for name, png := range shots {
		if len(png) < 8 || string(png[1:4]) != "PNG" {
			t.Fatalf("screenshot %s is not a PNG", name)
		}
		if err := os.WriteFile(filepath.Join(tmp, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if os.Getenv(screenshotsEnv) == "1" {
		dir := filepath.Join("..", "..", "docs", "screenshots")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, png := range shots {
			if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("screenshots written to %s", dir)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
