// Command notifications is the cinder-like notification flow: a volume
// service sends volume.create.start and volume.create.end (messagingv2,
// topic notifications) and a listener, ceilometer-style, prints them.
//
//	go run ./examples/notifications -url memory://
//	go run ./examples/notifications -url rabbit://guest:guest@127.0.0.1:5672/ -role listener
//	go run ./examples/notifications -url rabbit://guest:guest@127.0.0.1:5672/ -role notifier
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	_ "github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/messaging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "notifications:", err)
		os.Exit(1)
	}
}

type volume struct {
	VolumeID    string `json:"volume_id"`
	DisplayName string `json:"display_name"`
	Size        int    `json:"size"`
	Status      string `json:"status"`
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("notifications", flag.ContinueOnError)
	url := fs.String("url", "memory://", "transport URL")
	role := fs.String("role", "both", "both, listener or notifier")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tr, err := messaging.OpenTransport(ctx, *url, messaging.DefaultTransportConfig())
	if err != nil {
		return err
	}
	defer tr.Close()

	var mu sync.Mutex
	got := make(chan struct{}, 2)
	if *role != "notifier" {
		show := func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
			mu.Lock()
			fmt.Fprintf(out, "%s %s from %s: %s (request %v)\n", n.Priority, n.EventType, n.PublisherID, n.Payload, n.Context["request_id"])
			mu.Unlock()
			got <- struct{}{}
			return messaging.Handled
		}
		listener, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: "notifications"}},
			[]messaging.NotificationEndpoint{{
				Filter:   &messaging.NotificationFilter{EventType: `volume\.create\.`},
				Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: show, messaging.PriorityError: show},
			}}, messaging.WithListenerPoolSize(1))
		if err != nil {
			return err
		}
		if err := listener.Start(ctx); err != nil {
			return err
		}
		defer listener.Stop(context.Background())
		if *role == "listener" {
			<-ctx.Done()
			return nil
		}
	}
	notifier, err := messaging.NewNotifier(tr, "volume.host1@lvm", messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2))
	if err != nil {
		return err
	}
	rctx := messaging.WithRequestContext(ctx, messaging.RequestContext{"request_id": "req-1", "user_id": "admin", "project_id": "demo"})
	v := volume{VolumeID: "9f6a5b1e", DisplayName: "vol1", Size: 1, Status: "creating"}
	if err := notifier.Info(rctx, "volume.create.start", v); err != nil {
		return err
	}
	v.Status = "available"
	if err := notifier.Info(rctx, "volume.create.end", v); err != nil {
		return err
	}
	if *role == "both" {
		for i := 0; i < 2; i++ {
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("the listener did not receive both notifications")
			}
		}
	}
	return nil
}
