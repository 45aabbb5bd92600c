package rabbit

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/oslogo/oslogo/driver"
)

// TestConcurrentDeclareAndPublish runs the declarations a first
// notification to a topic makes (exchange, queue, binding) on one send
// connection while other goroutines publish on it. A declaration sent on a
// channel that is publishing can land between a publish's method and
// content frames, and two synchronous declarations on one channel can take
// each other's replies (amqp091-go's "503 unexpected command received");
// every publish here must succeed and arrive.
func TestConcurrentDeclareAndPublish(t *testing.T) {
	d := openTest(t, map[string]string{"rpc_conn_pool_size": "1", "conn_pool_min_size": "1"})
	ctx := ctxT(t, 60*time.Second)
	const workers, rounds = 8, 25
	var topics []string
	for w := 0; w < workers; w++ {
		for r := 0; r < rounds; r++ {
			topics = append(topics, fmt.Sprintf("%s_%d_%d", uniqueTopic(t), w, r))
		}
	}
	var queues []string
	for _, tp := range topics {
		queues = append(queues, tp+".info")
	}
	t.Cleanup(func() { cleanupQueues(t, queues...) })

	errs := make(chan error, workers*rounds*2)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				// A fresh topic: this publish declares first.
				n := &driver.Notification{MessageID: NewMessageID(), PublisherID: "p", EventType: "e", Priority: "INFO",
					Payload: json.RawMessage(`{"i": 1}`), Timestamp: PythonTimestamp(time.Now())}
				if err := d.Notify(ctx, driver.Target{Exchange: "oslogo_decl", Topic: topics[w*rounds+r]}, n, driver.NotifyOptions{Envelope: true}); err != nil {
					errs <- fmt.Errorf("notify %d/%d: %w", w, r, err)
					return
				}
				// A topic declared already: a plain publish on the same channel.
				if err := d.Notify(ctx, driver.Target{Exchange: "oslogo_decl", Topic: topics[w*rounds]}, n, driver.NotifyOptions{Envelope: true}); err != nil {
					errs <- fmt.Errorf("notify again %d/%d: %w", w, r, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// Every notification is in its queue.
	ch, err := amqpConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	for w := 0; w < workers; w++ {
		for r := 0; r < rounds; r++ {
			q, err := ch.QueueDeclarePassive(topics[w*rounds+r]+".info", false, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if r == 0 {
				want = 1 + rounds
			}
			if q.Messages != want {
				t.Errorf("%s.info holds %d messages, want %d", topics[w*rounds+r], q.Messages, want)
			}
		}
	}
}
