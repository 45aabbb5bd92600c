package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/oslogo/oslogo/internal/mgmtclient"
)

// oslogo ctl: rabbitmqctl's everyday commands over the management HTTP API,
// so that one tool administers the embedded broker and RabbitMQ with its
// management plugin alike (docs/MANAGEMENT.md, "oslogo ctl").

// Environment variables that choose the API when no flag does.
const (
	envMgmtURL      = "OSLOGO_MGMT_URL"
	envMgmtUser     = "OSLOGO_MGMT_USER"
	envMgmtPassword = "OSLOGO_MGMT_PASSWORD"
)

func init() {
	register(&command{name: "ctl", summary: "administer a broker over the management HTTP API, like rabbitmqctl", run: runCtl})
}

// ctlCmd is one subcommand of ctl.
type ctlCmd struct {
	synopsis string
	min, max int // positional arguments; max < 0: any number
	run      func(ctx context.Context, r *ctlRun, args []string) error
}

var ctlCmds = map[string]*ctlCmd{}

// ctlRun is one invocation: the client and the common flags.
type ctlRun struct {
	env       *cmdEnv
	c         *mgmtclient.Client
	vhost     string
	quiet     bool
	noHeaders bool
	json      bool
	timeout   time.Duration

	// Flags of single subcommands.
	priority    int
	applyTo     string
	ifEmpty     bool
	ifUnused    bool
	description string
}

func ctlUsage(env *cmdEnv) {
	w := env.stdout
	fmt.Fprintln(w, "usage: oslogo ctl [flags] <command> [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Talks to the management HTTP API (the embedded broker's --http, or RabbitMQ's")
	fmt.Fprintln(w, "management plugin). Flags may follow the command.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(ctlCmds))
	for n := range ctlCmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %s %s\n", n, ctlCmds[n].synopsis)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "The API is %s as guest/guest unless --url/--username/--password or\n", mgmtclient.DefaultURL)
	fmt.Fprintf(w, "%s, %s, %s say otherwise (flags win).\n", envMgmtURL, envMgmtUser, envMgmtPassword)
	fmt.Fprintln(w, "Exit codes: 1 the API refused, 2 timed out, 3 cannot connect, 64 bad usage.")
}

func runCtl(ctx context.Context, env *cmdEnv, args []string) error {
	r := &ctlRun{env: env}
	fs := newFlagSet(env, "ctl", "[flags] <command> [args] (oslogo ctl help lists the commands)")
	urlFlag := fs.String("url", "", "management API URL (default $"+envMgmtURL+" or "+mgmtclient.DefaultURL+")")
	user := fs.String("username", "", "user (default $"+envMgmtUser+" or guest)")
	pass := fs.String("password", "", "password (default $"+envMgmtPassword+" or guest)")
	fs.StringVar(&r.vhost, "p", "/", "virtual host")
	fs.StringVar(&r.vhost, "vhost", "/", "virtual host")
	fs.BoolVar(&r.quiet, "q", false, "no banner lines")
	fs.BoolVar(&r.quiet, "quiet", false, "no banner lines")
	fs.BoolVar(&r.quiet, "s", false, "no banner lines (rabbitmqctl's --silent)")
	fs.BoolVar(&r.quiet, "silent", false, "no banner lines")
	fs.BoolVar(&r.noHeaders, "no-table-headers", false, "no column header row")
	formatter := fs.String("formatter", "table", "output of lists: table (tab-separated) or json")
	newSecondsFlag(fs, &r.timeout, "t", 60*time.Second, "timeout of each request")
	newSecondsFlag(fs, &r.timeout, "timeout", 60*time.Second, "timeout of each request")
	fs.IntVar(&r.priority, "priority", 0, "set_policy: priority")
	fs.StringVar(&r.applyTo, "apply-to", "all", "set_policy: all, queues or exchanges")
	fs.BoolVar(&r.ifEmpty, "if-empty", false, "delete_queue: only if it has no messages")
	fs.BoolVar(&r.ifUnused, "if-unused", false, "delete_queue: only if it has no consumers")
	fs.StringVar(&r.description, "description", "", "add_vhost: description")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		ctlUsage(env)
		return usageError(errors.New("no command given"))
	}
	if pos[0] == "help" {
		ctlUsage(env)
		return nil
	}
	sub, ok := ctlCmds[pos[0]]
	if !ok {
		return usageError(fmt.Errorf("unknown command %q (run 'oslogo ctl help')", pos[0]))
	}
	name, rest := pos[0], pos[1:]
	if len(rest) < sub.min || (sub.max >= 0 && len(rest) > sub.max) {
		return usageError(fmt.Errorf("usage: oslogo ctl %s %s", name, sub.synopsis))
	}
	switch *formatter {
	case "table":
	case "json":
		r.json = true
	default:
		return usageError(fmt.Errorf("--formatter %q: table or json", *formatter))
	}
	if r.vhost == "" {
		return usageError(errors.New("-p: empty virtual host"))
	}
	cfg := mgmtclient.Config{URL: firstNonEmpty(*urlFlag, os.Getenv(envMgmtURL), mgmtclient.DefaultURL),
		User: firstNonEmpty(*user, os.Getenv(envMgmtUser)), Password: firstNonEmpty(*pass, os.Getenv(envMgmtPassword)),
		Timeout: r.timeout}
	// User information in the URL is used when no flag or variable names
	// a user; otherwise guest/guest fill what is missing, as rabbitmqadmin.
	if cfg.User != "" || !strings.Contains(cfg.URL, "@") {
		cfg.User = firstNonEmpty(cfg.User, "guest")
		cfg.Password = firstNonEmpty(cfg.Password, "guest")
	}
	c, err := mgmtclient.New(cfg)
	if err != nil {
		return usageError(err)
	}
	r.c = c
	defer c.CloseIdleConnections()
	return ctlError(sub.run(ctx, r, rest))
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// ctlError gives an error its exit code: 3 when the API could not be
// reached, 2 on a timeout, 1 when it answered with an error.
func ctlError(err error) error {
	var ee *exitError
	switch {
	case err == nil, errors.As(err, &ee), errors.Is(err, flag.ErrHelp):
		return err
	case errors.Is(err, mgmtclient.ErrUnreachable):
		return &exitError{code: exitUnreachable, err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{code: exitTimeout, err: err}
	default:
		return &exitError{code: exitRemote, err: err}
	}
}

// banner prints rabbitmqctl's informational line unless -q.
func (r *ctlRun) banner(format string, a ...any) {
	if !r.quiet && !r.json {
		fmt.Fprintf(r.env.stdout, format+"\n", a...)
	}
}
