package messaging_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

// openExample opens an in-process transport; with RabbitMQ it would be
// "rabbit://guest:guest@127.0.0.1:5672/" and nothing else changes.
func openExample(name string) *messaging.Transport {
	tr, err := messaging.OpenTransport(context.Background(), "memory://"+name, messaging.DefaultTransportConfig())
	if err != nil {
		panic(err)
	}
	return tr
}

type addArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

// A server with an "add" method, and a client calling it: the add service
// of oslo_message_server.py and oslo_message_client.py.
func ExampleRPCClient_Call() {
	ctx := context.Background()
	tr := openExample("example-call")
	defer tr.Close()

	ep := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(ep, "add", func(_ context.Context, a addArgs) (int, error) { return a.A + a.B, nil })
	srv, _ := messaging.NewRPCServer(tr, messaging.Target{Topic: "test", Server: "server1"}, []*messaging.Endpoint{ep})
	_ = srv.Start(ctx)
	defer srv.Stop(ctx)

	client := messaging.NewRPCClient(tr, messaging.Target{Topic: "test"})
	sum, err := messaging.Call[int](ctx, client, "add", addArgs{A: 2, B: 3})
	fmt.Println("result:", sum, err)

	// Prepare overrides target fields for one use, as client.prepare().
	sum, err = messaging.Call[int](ctx, client.Prepare(messaging.WithVersion("1.0"), messaging.WithTimeout(5*time.Second)), "add", addArgs{A: 2, B: 3})
	fmt.Println("result_two:", sum, err)
	// Output:
	// result: 5 <nil>
	// result_two: 5 <nil>
}

// A cast returns as soon as the message is sent; the server runs it later.
func ExampleRPCClient_Cast() {
	ctx := context.Background()
	tr := openExample("example-cast")
	defer tr.Close()

	done := make(chan string, 1)
	ep := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(ep, "notify_time", func(_ context.Context, a struct{ Now string }) (any, error) {
		done <- a.Now
		return nil, nil
	})
	srv, _ := messaging.NewRPCServer(tr, messaging.Target{Topic: "sample2", Server: "client1"}, []*messaging.Endpoint{ep})
	_ = srv.Start(ctx)
	defer srv.Stop(ctx)

	client := messaging.NewRPCClient(tr, messaging.Target{Topic: "sample2", Server: "client1"})
	err := client.Cast(ctx, "notify_time", map[string]string{"now": "12:00"})
	fmt.Println("cast:", err, "received:", <-done)
	// Output: cast: <nil> received: 12:00
}

// A fanout cast reaches every server of the topic.
func ExampleWithFanout() {
	ctx := context.Background()
	tr := openExample("example-fanout")
	defer tr.Close()

	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	for _, name := range []string{"client1", "client2"} {
		ep := messaging.NewEndpoint(messaging.Target{})
		messaging.Handle(ep, "broadcast_time", func(context.Context, struct{}) (any, error) {
			mu.Lock()
			got = append(got, name)
			mu.Unlock()
			wg.Done()
			return nil, nil
		})
		srv, _ := messaging.NewRPCServer(tr, messaging.Target{Topic: "sample1", Server: name}, []*messaging.Endpoint{ep})
		_ = srv.Start(ctx)
		defer srv.Stop(ctx)
	}
	wg.Add(2)
	client := messaging.NewRPCClient(tr, messaging.Target{Topic: "sample1"}, messaging.WithFanout(true))
	_ = client.Cast(ctx, "broadcast_time", nil)
	wg.Wait()
	sort.Strings(got)
	fmt.Println(got)
	// Output: [client1 client2]
}

// A notifier with the messagingv2 driver, and a listener with a handler for
// the info priority.
func ExampleNotifier() {
	ctx := context.Background()
	tr := openExample("example-notifier")
	defer tr.Close()

	received := make(chan *messaging.Notification, 2)
	listener, _ := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: "notifications"}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{
			messaging.PriorityInfo: func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
				received <- n
				return messaging.Handled
			},
		}}}, messaging.WithListenerPoolSize(1)) // one at a time: in order
	_ = listener.Start(ctx)
	defer listener.Stop(ctx)

	notifier, _ := messaging.NewNotifier(tr, "volume.host1", messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2))
	_ = notifier.Info(ctx, "volume.create.start", map[string]any{"volume_id": "v-1"})
	_ = notifier.Info(ctx, "volume.create.end", map[string]any{"volume_id": "v-1", "status": "available"})
	for i := 0; i < 2; i++ {
		n := <-received
		fmt.Println(n.Priority, n.PublisherID, n.EventType, string(n.Payload))
	}
	// Output:
	// info volume.host1 volume.create.start {"volume_id":"v-1"}
	// info volume.host1 volume.create.end {"status":"available","volume_id":"v-1"}
}

// Two listeners in different pools each receive every notification; a
// filter limits an endpoint to the event types it cares about.
func ExampleNotificationListener() {
	ctx := context.Background()
	tr := openExample("example-listener")
	defer tr.Close()

	var mu sync.Mutex
	var wg sync.WaitGroup
	seen := map[string][]string{}
	listen := func(pool string, filter *messaging.NotificationFilter) *messaging.NotificationListener {
		l, _ := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: "notifications"}},
			[]messaging.NotificationEndpoint{{Filter: filter, Handlers: map[messaging.Priority]messaging.NotificationHandler{
				messaging.PriorityInfo: func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
					mu.Lock()
					seen[pool] = append(seen[pool], n.EventType)
					mu.Unlock()
					wg.Done()
					return messaging.Handled
				},
			}}}, messaging.WithPool(pool))
		_ = l.Start(ctx)
		return l
	}
	defer listen("audit", nil).Stop(ctx)
	defer listen("volumes", &messaging.NotificationFilter{EventType: `volume\.`}).Stop(ctx)
	wg.Add(3)

	notifier, _ := messaging.NewNotifier(tr, "compute.host1", messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2))
	_ = notifier.Info(ctx, "compute.instance.create.end", nil)
	_ = notifier.Info(ctx, "volume.attach", nil)
	wg.Wait()
	fmt.Println(len(seen["audit"]), seen["volumes"])
	// Output: 2 [volume.attach]
}
