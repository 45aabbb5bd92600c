// Command oslogo is the oslogo CLI: RPC calls and casts, notifications,
// example servers, the demo and the embedded broker, in one binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand. Each lives in its own file and registers
// itself from init, so adding one never touches this file.
type command struct {
	name    string
	summary string
	// run parses args (everything after the command name) and does the work.
	// A returned *exitError sets the exit code; any other error exits 1.
	run func(ctx context.Context, env *cmdEnv, args []string) error
}

// cmdEnv is what a command may touch of the outside world; tests swap it.
type cmdEnv struct {
	stdout io.Writer
	stderr io.Writer
}

// exitError carries an exit code and a one-line message. A bare error is
// printed as it is, without the "oslogo <command>:" prefix (remote failures
// print as "<module>.<class>: <message>").
type exitError struct {
	code int
	err  error
	bare bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("oslogo: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: oslogo <command> [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'oslogo <command> --help' for a command's flags. Flags may follow the")
	fmt.Fprintln(w, "arguments. Exit codes: 1 the server raised, 2 timed out, 3 cannot connect,")
	fmt.Fprintln(w, "64 bad usage.")
}

// runMain runs the CLI and returns the process exit code.
func runMain(ctx context.Context, env *cmdEnv, args []string) int {
	if len(args) == 0 {
		usage(env.stderr)
		return exitUsage
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "help" {
		usage(env.stdout)
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(env.stderr, "oslogo: unknown command %q (run 'oslogo --help')\n", name)
		return exitUsage
	}
	err := c.run(ctx, env, args[1:])
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	// One line, whatever the error holds.
	msg := strings.Join(strings.Fields(err.Error()), " ")
	switch {
	case msg == "":
	case ee != nil && ee.bare:
		fmt.Fprintln(env.stderr, msg)
	default:
		fmt.Fprintf(env.stderr, "oslogo %s: %s\n", name, msg)
	}
	return code
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, &cmdEnv{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}

// newFlagSet returns a flag set whose errors are returned, not printed
// with a stack of usage text, and whose --help prints the flags.
func newFlagSet(env *cmdEnv, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("oslogo "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every parse error; parseFlags prints
	// the usage itself, only for --help.
	fs.Usage = func() {}
	usages[fs] = func() {
		fs.SetOutput(env.stdout)
		fmt.Fprintf(env.stdout, "usage: oslogo %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseNoArgs is parseFlags for commands that take no positional arguments:
// a stray one is a usage error, not silently ignored.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	positional, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return usageError(fmt.Errorf("unexpected argument %q", positional[0]))
	}
	return nil
}

// usages holds the --help printer of each flag set.
var usages = map[*flag.FlagSet]func(){}

// parseFlags parses args, flags and positional arguments in any order,
// turning --help into flag.ErrHelp after printing usage and any other
// problem into a usage error. The positional arguments are returned.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usages[fs]()
			return nil, flag.ErrHelp
		}
		return nil, usageError(err)
	}
	return positional, nil
}
