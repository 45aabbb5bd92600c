// Command memload measures a broker's resident memory under a slow
// consumer: one publisher sends as fast as the broker takes messages while
// one consumer with no prefetch limit handles a message every -work and
// acknowledges it. It samples the broker's VmRSS every 100 ms and prints one
// JSON object with the peak.
//
// Usage: go run ./broker/internal/memload -url amqp://guest:guest@127.0.0.1:25673/ -pid PID
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

var (
	url      = flag.String("url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	pid      = flag.Int("pid", 0, "broker process id whose RSS is sampled")
	duration = flag.Duration("duration", 30*time.Second, "how long the run lasts")
	size     = flag.Int("size", 1024, "message body size in bytes")
	work     = flag.Duration("work", 10*time.Millisecond, "consumer time per message before its ack")
)

// Result is one run.
type Result struct {
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	FinalRSSMB  float64 `json:"final_rss_mb"`
	Published   int64   `json:"published"`
	Acked       int64   `json:"acked"`
	BlockedTime float64 `json:"publisher_blocked_s"`
	Seconds     float64 `json:"seconds"`
}

func rssMB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func main() {
	flag.Parse()
	if *pid == 0 {
		log.Fatal("-pid is required")
	}
	const q = "memload.slow"
	cc, err := amqp.Dial(*url)
	if err != nil {
		log.Fatal(err)
	}
	cch, err := cc.Channel()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := cch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		log.Fatal(err)
	}
	deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		log.Fatal(err)
	}
	var acked atomic.Int64
	go func() {
		for d := range deliveries {
			time.Sleep(*work)
			if d.Ack(false) == nil {
				acked.Add(1)
			}
		}
	}()

	pc, err := amqp.Dial(*url)
	if err != nil {
		log.Fatal(err)
	}
	blockedCh := pc.NotifyBlocked(make(chan amqp.Blocking, 16))
	pch, err := pc.Channel()
	if err != nil {
		log.Fatal(err)
	}
	var res Result
	var peak atomic.Uint64 // MiB * 1000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v := uint64(rssMB() * 1000); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var blockedNS atomic.Int64
	go func() {
		defer wg.Done()
		var since time.Time
		for {
			select {
			case b := <-blockedCh:
				if b.Active {
					since = time.Now()
				} else if !since.IsZero() {
					blockedNS.Add(int64(time.Since(since)))
					since = time.Time{}
				}
			case <-stop:
				if !since.IsZero() {
					blockedNS.Add(int64(time.Since(since)))
				}
				return
			}
		}
	}()
	body := make([]byte, *size)
	start := time.Now()
	var published atomic.Int64
	// The publisher runs on its own: blocked by the alarm it waits on a
	// full socket, and the process exits under it at the deadline.
	go func() {
		for {
			if err := pch.Publish("", q, false, false, amqp.Publishing{Body: body}); err != nil {
				log.Fatal(err)
			}
			published.Add(1)
		}
	}()
	time.Sleep(*duration)
	res.Published = published.Load()
	res.Seconds = time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	res.PeakRSSMB = float64(peak.Load()) / 1000
	res.FinalRSSMB = rssMB()
	res.Acked = acked.Load()
	res.BlockedTime = time.Duration(blockedNS.Load()).Seconds()
	_ = json.NewEncoder(os.Stdout).Encode(res)
	// The consumer still holds a backlog and the publisher may be blocked;
	// the broker drops the exclusive queue when the connections go.
	os.Exit(0)
}
