package interop

import (
	"bufio"
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/oslo18"
	"github.com/oslogo/oslogo/internal/testrabbit"
)

// functionalCases are the test cases of upstream's functional suite that
// exercise the transport (MetricsTestCase needs oslo.metrics and an HTTP
// endpoint, unrelated to the broker).
var functionalCases = []string{"CallTestCase", "CastTestCase", "NotifyTestCase"}

// functional18Want is how many tests those cases hold in 18.1.0.
const functional18Want = 20

// functional18Configs: the suite in oslo.messaging's defaults and in
// kolla-ansible 2025.1's options (kolla-qm: quorum, transient quorum and
// stream fanout queues, prefetch 10, queue manager); see
// interop/python18/functional.py for how the options reach the tests.
var functional18Configs = []string{"defaults", "kolla-qm"}

// TestFunctional18EmbeddedBroker runs oslo.messaging 18.1.0's own
// functional tests (Call, Cast and Notify test cases, unchanged) against
// the embedded broker, a fresh broker per configuration, and fails on any
// failure, error or skip, or on fewer tests than the suite holds, except
// the failures functional18Expected lists for a configuration (which fail
// on RabbitMQ 3.10 too, for the reason given there).
func TestFunctional18EmbeddedBroker(t *testing.T) {
	peer := oslo18.Get(t)
	for _, conf := range functional18Configs {
		t.Run(conf, func(t *testing.T) {
			runFunctional18(t, peer, startEmbedded(t), conf)
		})
	}
}

// functional18Expected are the tests that fail in a configuration on
// RabbitMQ 3.10 as well (TestFunctional18RabbitMQ), with the line that
// shows why. test_simple_batch waits for batches of 100 notifications, but
// with kolla's rabbit_qos_prefetch_count = 10 the broker hands the batch
// listener 10 unacknowledged messages at a time, so each 2 s batch timeout
// yields 10: 21 batches for 205 notifications instead of 100 + 100 + 5.
var functional18Expected = map[string]map[string]string{
	"kolla-qm": {
		"oslo_messaging.tests.functional.test_functional.NotifyTestCase.test_simple_batch": "MismatchError: 3 != 21",
	},
}

// TestFunctional18RabbitMQ runs the suite in the kolla-qm configuration on
// RabbitMQ 3.10 (a vhost of its own): the reference for the failures
// functional18Expected lists.
func TestFunctional18RabbitMQ(t *testing.T) {
	peer := oslo18.Get(t)
	for _, conf := range []string{"kolla-qm"} {
		t.Run(conf, func(t *testing.T) {
			runFunctional18(t, peer, testrabbit.NewVhost(t, "functional18_"+conf), conf)
		})
	}
}

var functionalLine = regexp.MustCompile(`^result (PASS|FAIL|ERROR|SKIP): (\S+)(.*)$`)

// functionalCounts reads the runner's per-test lines.
type functionalCounts struct {
	passed, failed []string
	skipped        []string
	summary        string
}

func parseFunctional(out []byte) functionalCounts {
	var c functionalCounts
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := functionalLine.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "PASS":
				c.passed = append(c.passed, m[2])
			case "SKIP":
				c.skipped = append(c.skipped, m[2]+m[3])
			default:
				c.failed = append(c.failed, m[1]+" "+m[2])
			}
		}
		if strings.Contains(line, " passed, ") && strings.Contains(line, " failed") {
			c.summary = line
		}
	}
	return c
}

func runFunctional18(t *testing.T, peer oslo18.Peer, url, conf string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mod := "oslo_messaging.tests.functional.test_functional."
	args := []string{peer.Script("functional.py"), conf}
	for _, c := range functionalCases {
		args = append(args, mod+c)
	}
	cmd := peer18Cmd(ctx, t, peer, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(cmd.Env, "RPC_TRANSPORT_URL="+url, "NOTIFY_TRANSPORT_URL="+url)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	c := parseFunctional(out)
	t.Logf("oslo.messaging %s functional suite, %s, in %v: %d passed, %d failed, %d skipped (%s)",
		oslo18.Version, conf, time.Since(start).Round(time.Second), len(c.passed), len(c.failed), len(c.skipped), c.summary)
	expected := functional18Expected[conf]
	var unexpected []string
	for _, f := range c.failed {
		status, id, _ := strings.Cut(f, " ")
		why, ok := expected[id]
		if !ok || status != "FAIL" || !bytes.Contains(out, []byte(why)) {
			unexpected = append(unexpected, f)
		}
	}
	if len(unexpected) > 0 || len(c.skipped) > 0 || len(c.passed)+len(c.failed) != functional18Want || len(c.failed) != len(expected) {
		t.Errorf("functional suite: unexpected failures %v (expected only %v), skipped %v, %d passed + %d failed of %d, exit %v\n%s",
			unexpected, expected, c.skipped, len(c.passed), len(c.failed), functional18Want, err, out)
	}
	if err != nil && len(c.failed) == 0 {
		t.Errorf("the runner exited with %v after no failure", err)
	}
	if c.summary != strconv.Itoa(len(c.passed))+" passed, "+strconv.Itoa(len(c.failed))+" failed, "+strconv.Itoa(len(c.skipped))+" skipped" {
		t.Errorf("the runner's summary %q does not match its per-test lines", c.summary)
	}
}

// TestParseFunctional: the counter reads passes, failures, errors and
// skips from the runner's lines (so that a failing suite fails the test),
// each once: testtools' own report repeats "FAIL: id" for every failure.
func TestParseFunctional(t *testing.T) {
	out := []byte("Tests running...\nresult PASS: a.b.test_1\nresult FAIL: a.b.test_2\nTraceback...\nresult ERROR: a.b.test_3\n" +
		"result SKIP: a.b.test_4 no url\nresult PASS: a.b.test_5\n=====\nFAIL: a.b.test_2\n-----\nERROR: a.b.test_3\n2 passed, 2 failed, 1 skipped\n")
	c := parseFunctional(out)
	if len(c.passed) != 2 || len(c.failed) != 2 || len(c.skipped) != 1 || c.summary != "2 passed, 2 failed, 1 skipped" {
		t.Fatalf("%+v", c)
	}
}
