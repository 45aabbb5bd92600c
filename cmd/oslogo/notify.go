package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

func init() {
	register(&command{name: "notify", summary: "send one notification", run: runNotify})
	register(&command{name: "listen", summary: "print notifications as JSON lines", run: runListen})
}

func runNotify(ctx context.Context, env *cmdEnv, args []string) error {
	var tf transportFlags
	fs := newFlagSet(env, "notify", "[--url URL] [--topic notifications] [--driver messagingv2] --publisher-id P --event-type E [--priority info] PAYLOAD_JSON")
	tf.register(fs)
	topic := fs.String("topic", messaging.DefaultNotificationTopic, "notification topic")
	driverName := fs.String("driver", messaging.NotifyDriverMessagingV2, "notification driver: messaging, messagingv2, log, noop, ...")
	publisher := fs.String("publisher-id", "", "publisher id, e.g. compute.host1 (required)")
	eventType := fs.String("event-type", "", "event type, e.g. volume.create.end (required)")
	priorityName := fs.String("priority", "info", "audit, debug, info, warn, error, critical or sample")
	var timeout time.Duration
	newSecondsFlag(fs, &timeout, "timeout", 30*time.Second, "how long sending may take")
	positional, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *publisher == "" || *eventType == "" {
		return usageError(errors.New("--publisher-id and --event-type are required"))
	}
	priority, err := messaging.ParsePriority(*priorityName)
	if err != nil {
		return usageError(err)
	}
	if len(positional) > 1 {
		return usageError(errors.New("one PAYLOAD_JSON argument expected (quote it)"))
	}
	var payload any = map[string]any{}
	if len(positional) == 1 {
		if payload, err = jsonOrString(positional[0]); err != nil {
			return usageError(fmt.Errorf("PAYLOAD_JSON: %w", err))
		}
	}
	tr, err := tf.openNotifications(ctx, env)
	if err != nil {
		return err
	}
	defer tr.Close()
	n, err := messaging.NewNotifier(tr, *publisher, messaging.WithNotifyDrivers(*driverName), messaging.WithNotifyTopics(*topic))
	if err != nil {
		return usageError(err)
	}
	sendCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return tf.classify(n.Notify(sendCtx, priority, *eventType, payload))
}

// listenedNotification is what `oslogo listen` prints per notification.
type listenedNotification struct {
	Priority    string          `json:"priority"`
	PublisherID string          `json:"publisher_id"`
	EventType   string          `json:"event_type"`
	Payload     json.RawMessage `json:"payload"`
	Timestamp   string          `json:"timestamp"`
	MessageID   string          `json:"message_id"`
}

func runListen(ctx context.Context, env *cmdEnv, args []string) error {
	var tf transportFlags
	fs := newFlagSet(env, "listen", "[--url URL] [--topic notifications] [--exchange E] [--pool NAME] [--count N] [--timeout D]")
	tf.register(fs)
	topic := fs.String("topic", messaging.DefaultNotificationTopic, "notification topic")
	exchange := fs.String("exchange", "", "exchange (default: control_exchange)")
	pool := fs.String("pool", "", "listener pool name (each pool gets every notification once)")
	count := fs.Int("count", 0, "exit after this many notifications (0: until interrupted)")
	var timeout time.Duration
	newSecondsFlag(fs, &timeout, "timeout", 0, "exit after this long (0: no limit); with --count, running out of time exits 2")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	tr, err := tf.openNotifications(ctx, env)
	if err != nil {
		return err
	}
	defer tr.Close()

	lines := make(chan listenedNotification, 64)
	handler := func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
		select {
		case lines <- listenedNotification{string(n.Priority), n.PublisherID, n.EventType, n.Payload, n.Timestamp, n.MessageID}:
			return messaging.Handled
		case <-ctx.Done():
			return messaging.Requeue // not printed: leave it for another listener
		}
	}
	handlers := map[messaging.Priority]messaging.NotificationHandler{}
	for _, p := range messaging.Priorities {
		handlers[p] = handler
	}
	l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: *topic, Exchange: *exchange}},
		[]messaging.NotificationEndpoint{{Handlers: handlers}}, messaging.WithPool(*pool), messaging.WithListenerPoolSize(1), messaging.WithAllowRequeue(true))
	if err != nil {
		return usageError(err)
	}
	if err := l.Start(ctx); err != nil {
		return tf.classify(err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.Stop(stopCtx)
	}()
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	seen := 0
	for *count == 0 || seen < *count {
		select {
		case n := <-lines:
			if err := writeJSON(env.stdout, n); err != nil {
				return err
			}
			seen++
		case <-deadline:
			if *count > 0 {
				return &exitError{code: exitTimeout, err: fmt.Errorf("timed out after %v with %d of %d notifications", timeout, seen, *count)}
			}
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}
