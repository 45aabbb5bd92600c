// Package testrabbit gives a test binary a vhost of its own on the shared
// RabbitMQ at 127.0.0.1:5672 and deletes it when the tests end, so that one
// run of the suite leaves nothing behind on the broker and two runs never see
// each other's queues.
//
// A TestMain wraps its testing.M:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(testrabbit.Wrap(m)) }
//
// and the tests build their URL with URL(). OSLOGO_RABBIT_URL, when set, names
// a broker to use as it is (nothing is created or deleted there).
package testrabbit

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EnvURL overrides the broker of the tests; the wrapper sets it too, so that
// child processes (Python peers, the CLI) reach the same vhost.
const EnvURL = "OSLOGO_RABBIT_URL"

const prefix = "oslogo_test_"

// TestingM is the part of *testing.M that Wrap needs (goleak's TestingM too).
type TestingM interface{ Run() int }

type wrapped struct{ m TestingM }

// Wrap returns m with a private vhost created before its tests run and
// deleted after them.
func Wrap(m TestingM) TestingM { return wrapped{m} }

func (w wrapped) Run() int {
	if os.Getenv(EnvURL) != "" {
		return w.m.Run()
	}
	removeStale()
	vhost := fmt.Sprintf("%s%d_%d", prefix, os.Getpid(), time.Now().UnixNano()%1e6)
	if err := ctl("add_vhost", vhost); err != nil {
		fmt.Fprintf(os.Stderr, "testrabbit: RabbitMQ must be up on 127.0.0.1:5672 (run scripts/setup.sh): %v\n", err)
		return 1
	}
	defer func() { _ = ctl("delete_vhost", vhost) }()
	if err := ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"); err != nil {
		fmt.Fprintf(os.Stderr, "testrabbit: %v\n", err)
		return 1
	}
	os.Setenv(EnvURL, "rabbit://guest:guest@127.0.0.1:5672/"+vhost)
	defer os.Unsetenv(EnvURL)
	return w.m.Run()
}

// URL is the transport URL of the tests' broker: OSLOGO_RABBIT_URL, which
// Wrap sets to the private vhost.
func URL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	panic("testrabbit: " + EnvURL + " is not set: wrap the package's testing.M with testrabbit.Wrap")
}

// Vhost is the vhost part of URL().
func Vhost() string {
	u, err := url.Parse(URL())
	if err != nil {
		panic("testrabbit: " + EnvURL + ": " + err.Error())
	}
	return strings.TrimPrefix(u.Path, "/")
}

// removeStale deletes the vhosts of earlier runs whose process has gone (a
// test binary killed by a timeout cannot clean up after itself).
func removeStale() {
	out, err := exec.Command("rabbitmqctl", "-q", "list_vhosts", "name").Output()
	if err != nil {
		return
	}
	for _, name := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "_", 2)[0])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		_ = ctl("delete_vhost", name)
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func ctl(args ...string) error {
	out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}
