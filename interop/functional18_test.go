package interop

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/oslo18"
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
// failure, error or skip, or on fewer tests than the suite holds.
func TestFunctional18EmbeddedBroker(t *testing.T) {
	peer := oslo18.Get(t)
	for _, conf := range functional18Configs {
		t.Run(conf, func(t *testing.T) {
			runFunctional18(t, peer, startEmbedded(t), conf)
		})
	}
}

var functionalLine = regexp.MustCompile(`^(PASS|FAIL|ERROR|SKIP): (\S+)(.*)$`)

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
	cmd := exec.CommandContext(ctx, peer.Python, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(peer.Env, "RPC_TRANSPORT_URL="+url, "NOTIFY_TRANSPORT_URL="+url)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	c := parseFunctional(out)
	t.Logf("oslo.messaging %s functional suite, %s, in %v: %d passed, %d failed, %d skipped (%s)",
		oslo18.Version, conf, time.Since(start).Round(time.Second), len(c.passed), len(c.failed), len(c.skipped), c.summary)
	if len(c.failed) > 0 || len(c.skipped) > 0 || len(c.passed) != functional18Want || err != nil {
		t.Errorf("functional suite: failed %v, skipped %v, %d passed of %d, exit %v\n%s",
			c.failed, c.skipped, len(c.passed), functional18Want, err, out)
	}
	if c.summary != strconv.Itoa(len(c.passed))+" passed, "+strconv.Itoa(len(c.failed))+" failed, "+strconv.Itoa(len(c.skipped))+" skipped" {
		t.Errorf("the runner's summary %q does not match its per-test lines", c.summary)
	}
}

// TestParseFunctional: the counter reads passes, failures, errors and
// skips from the runner's lines (so that a failing suite fails the test).
func TestParseFunctional(t *testing.T) {
	out := []byte("Tests running...\nPASS: a.b.test_1\nFAIL: a.b.test_2\nTraceback...\nERROR: a.b.test_3\nSKIP: a.b.test_4 no url\nPASS: a.b.test_5\n2 passed, 2 failed, 1 skipped\n")
	c := parseFunctional(out)
	if len(c.passed) != 2 || len(c.failed) != 2 || len(c.skipped) != 1 || c.summary != "2 passed, 2 failed, 1 skipped" {
		t.Fatalf("%+v", c)
	}
}
