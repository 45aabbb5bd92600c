package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/oslogo/oslogo/internal/mgmtclient"
)

func init() {
	ctlCmds["status"] = &ctlCmd{synopsis: "", run: ctlStatus}
	ctlCmds["add_user"] = &ctlCmd{synopsis: "<user> <password>", min: 2, max: 2, run: ctlAddUser}
	ctlCmds["delete_user"] = &ctlCmd{synopsis: "<user>", min: 1, max: 1, run: ctlDeleteUser}
	ctlCmds["change_password"] = &ctlCmd{synopsis: "<user> <password>", min: 2, max: 2, run: ctlChangePassword}
	ctlCmds["set_user_tags"] = &ctlCmd{synopsis: "<user> [tag ...]", min: 1, max: -1, run: ctlSetUserTags}
	ctlCmds["set_permissions"] = &ctlCmd{synopsis: "[-p vhost] <user> <conf> <write> <read>", min: 4, max: 4, run: ctlSetPermissions}
	ctlCmds["clear_permissions"] = &ctlCmd{synopsis: "[-p vhost] <user>", min: 1, max: 1, run: ctlClearPermissions}
	ctlCmds["add_vhost"] = &ctlCmd{synopsis: "[--description text] <vhost>", min: 1, max: 1, run: ctlAddVHost}
	ctlCmds["delete_vhost"] = &ctlCmd{synopsis: "<vhost>", min: 1, max: 1, run: ctlDeleteVHost}
	ctlCmds["set_policy"] = &ctlCmd{synopsis: "[-p vhost] [--priority N] [--apply-to all|queues|exchanges] <name> <pattern> <definition>",
		min: 3, max: 3, run: ctlSetPolicy}
	ctlCmds["clear_policy"] = &ctlCmd{synopsis: "[-p vhost] <name>", min: 1, max: 1, run: ctlClearPolicy}
	ctlCmds["close_connection"] = &ctlCmd{synopsis: "<connection name> <reason>", min: 2, max: 2, run: ctlCloseConnection}
	ctlCmds["purge_queue"] = &ctlCmd{synopsis: "[-p vhost] <queue>", min: 1, max: 1, run: ctlPurgeQueue}
	ctlCmds["delete_queue"] = &ctlCmd{synopsis: "[-p vhost] [--if-empty] [--if-unused] <queue>", min: 1, max: 1, run: ctlDeleteQueue}
	ctlCmds["export_definitions"] = &ctlCmd{synopsis: "<file | ->", min: 1, max: 1, run: ctlExportDefinitions}
	ctlCmds["import_definitions"] = &ctlCmd{synopsis: "<file>", min: 1, max: 1, run: ctlImportDefinitions}
	ctlCmds["set_vm_memory_high_watermark"] = &ctlCmd{synopsis: "<fraction> | absolute <bytes>", min: 1, max: 2, run: ctlSetWatermark}
}

// apiUser is what GET /api/users/{user} answers; tags are a list on 3.10
// and a comma-separated string on older releases.
type apiUser struct {
	Name             string `json:"name"`
	PasswordHash     string `json:"password_hash"`
	HashingAlgorithm string `json:"hashing_algorithm"`
	Tags             any    `json:"tags"`
}

func (u apiUser) tagList() []string {
	switch t := u.Tags.(type) {
	case string:
		if t == "" {
			return nil
		}
		return strings.Split(t, ",")
	case []any:
		var out []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// notFound turns a 404 into rabbitmqctl's message for the object.
func notFound(err error, msg string) error {
	if mgmtclient.IsNotFound(err) {
		return fmt.Errorf("%s (%v)", msg, err)
	}
	return err
}

func ctlAddUser(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Adding user \"%s\" ...", a[0])
	var u apiUser
	err := r.c.Get(ctx, mgmtclient.Path("users", a[0]), &u)
	if err == nil {
		return fmt.Errorf("user %q already exists", a[0])
	}
	if !mgmtclient.IsNotFound(err) {
		return err
	}
	if err := r.c.Put(ctx, mgmtclient.Path("users", a[0]), map[string]any{"password": a[1], "tags": ""}); err != nil {
		return err
	}
	r.banner("Done. Don't forget to grant the user permissions to some virtual hosts! See 'oslogo ctl help' for set_permissions.")
	return nil
}

func ctlDeleteUser(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Deleting user \"%s\" ...", a[0])
	return notFound(r.c.Delete(ctx, mgmtclient.Path("users", a[0])), fmt.Sprintf("user %q does not exist", a[0]))
}

func ctlChangePassword(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Changing password for user \"%s\" ...", a[0])
	var u apiUser
	if err := r.c.Get(ctx, mgmtclient.Path("users", a[0]), &u); err != nil {
		return notFound(err, fmt.Sprintf("user %q does not exist", a[0]))
	}
	return r.c.Put(ctx, mgmtclient.Path("users", a[0]), map[string]any{"password": a[1], "tags": strings.Join(u.tagList(), ",")})
}

func ctlSetUserTags(ctx context.Context, r *ctlRun, a []string) error {
	tags := a[1:]
	r.banner("Setting tags for user \"%s\" to [%s] ...", a[0], strings.Join(tags, ", "))
	var u apiUser
	if err := r.c.Get(ctx, mgmtclient.Path("users", a[0]), &u); err != nil {
		return notFound(err, fmt.Sprintf("user %q does not exist", a[0]))
	}
	// The password stays: the user is written back with its hash.
	body := map[string]any{"password_hash": u.PasswordHash, "tags": strings.Join(tags, ",")}
	if u.HashingAlgorithm != "" {
		body["hashing_algorithm"] = u.HashingAlgorithm
	}
	return r.c.Put(ctx, mgmtclient.Path("users", a[0]), body)
}

func ctlSetPermissions(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Setting permissions for user \"%s\" in vhost \"%s\" ...", a[0], r.vhost)
	return r.c.Put(ctx, mgmtclient.Path("permissions", r.vhost, a[0]),
		map[string]string{"configure": a[1], "write": a[2], "read": a[3]})
}

func ctlClearPermissions(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Clearing permissions for user \"%s\" in vhost \"%s\" ...", a[0], r.vhost)
	return notFound(r.c.Delete(ctx, mgmtclient.Path("permissions", r.vhost, a[0])),
		fmt.Sprintf("user %q has no permissions in vhost %q", a[0], r.vhost))
}

func ctlAddVHost(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Adding vhost \"%s\" ...", a[0])
	body := map[string]any{}
	if r.description != "" {
		body["description"] = r.description
	}
	return r.c.Put(ctx, mgmtclient.Path("vhosts", a[0]), body)
}

func ctlDeleteVHost(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Deleting vhost \"%s\" ...", a[0])
	return notFound(r.c.Delete(ctx, mgmtclient.Path("vhosts", a[0])), fmt.Sprintf("virtual host '%s' does not exist", a[0]))
}

func ctlSetPolicy(ctx context.Context, r *ctlRun, a []string) error {
	name, pattern, def := a[0], a[1], a[2]
	var definition map[string]any
	dec := json.NewDecoder(strings.NewReader(def))
	dec.UseNumber()
	if err := dec.Decode(&definition); err != nil || definition == nil {
		return usageError(fmt.Errorf("set_policy: the definition %q is not a JSON object", def))
	}
	switch r.applyTo {
	case "all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams":
	default:
		return usageError(fmt.Errorf("set_policy: --apply-to %q: all, queues or exchanges", r.applyTo))
	}
	r.banner("Setting policy \"%s\" for pattern \"%s\" to \"%s\" with priority \"%s\" for vhost \"%s\" ...",
		name, pattern, def, strconv.Itoa(r.priority), r.vhost)
	return r.c.Put(ctx, mgmtclient.Path("policies", r.vhost, name), map[string]any{
		"pattern": pattern, "definition": definition, "priority": r.priority, "apply-to": r.applyTo})
}

func ctlClearPolicy(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Clearing policy \"%s\" on vhost \"%s\" ...", a[0], r.vhost)
	return notFound(r.c.Delete(ctx, mgmtclient.Path("policies", r.vhost, a[0])), "parameter does not exist")
}

func ctlCloseConnection(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Closing connection %s, reason: %s...", a[0], a[1])
	err := r.c.Do(ctx, mgmtclient.Request{Method: http.MethodDelete, Path: mgmtclient.Path("connections", a[0]),
		Header: http.Header{"X-Reason": {a[1]}}}, nil)
	return notFound(err, fmt.Sprintf("no connection %q", a[0]))
}

func ctlPurgeQueue(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Purging queue '%s' in vhost '%s' ...", a[0], r.vhost)
	return notFound(r.c.Delete(ctx, mgmtclient.Path("queues", r.vhost, a[0], "contents")), "queue not found")
}

func ctlDeleteQueue(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Deleting queue '%s' on vhost '%s' ...", a[0], r.vhost)
	var q struct {
		MessagesReady json.Number `json:"messages_ready"`
	}
	p := mgmtclient.Path("queues", r.vhost, a[0])
	if err := r.c.Get(ctx, p, &q); err != nil {
		return notFound(err, "queue not found")
	}
	query := map[string][]string{}
	if r.ifEmpty {
		query["if-empty"] = []string{"true"}
	}
	if r.ifUnused {
		query["if-unused"] = []string{"true"}
	}
	if err := r.c.Do(ctx, mgmtclient.Request{Method: http.MethodDelete, Path: p, Query: query}, nil); err != nil {
		return notFound(err, "queue not found")
	}
	n := q.MessagesReady.String()
	if n == "" {
		n = "0"
	}
	r.banner("Queue was successfully deleted with %s ready messages", n)
	return nil
}

func ctlExportDefinitions(ctx context.Context, r *ctlRun, a []string) error {
	var defs json.RawMessage
	if a[0] != "-" {
		r.banner("Exporting definitions in JSON to a file at \"%s\" ...", a[0])
	}
	if err := r.c.Get(ctx, mgmtclient.Path("definitions"), &defs); err != nil {
		return err
	}
	if a[0] == "-" {
		_, err := fmt.Fprintf(r.env.stdout, "%s\n", defs)
		return err
	}
	if err := os.WriteFile(a[0], append(defs, '\n'), 0o600); err != nil {
		return &exitError{code: exitRemote, err: err}
	}
	return nil
}

func ctlImportDefinitions(ctx context.Context, r *ctlRun, a []string) error {
	r.banner("Importing definitions in JSON from a file at \"%s\" ...", a[0])
	data, err := os.ReadFile(a[0])
	if err != nil {
		return usageError(err)
	}
	if !json.Valid(data) {
		return usageError(fmt.Errorf("%s is not JSON", a[0]))
	}
	if err := r.c.Do(ctx, mgmtclient.Request{Method: http.MethodPost, Path: mgmtclient.Path("definitions"), Body: data}, nil); err != nil {
		return err
	}
	r.banner("Successfully started definition import. This process is asynchronous and can take some time.")
	return nil
}

// nodeName is the node the API runs on (GET /api/overview).
func nodeName(ctx context.Context, r *ctlRun) (string, error) {
	var ov struct {
		Node string `json:"node"`
	}
	if err := r.c.Get(ctx, mgmtclient.Path("overview"), &ov); err != nil {
		return "", err
	}
	if ov.Node == "" {
		return "", errors.New("GET /api/overview: no node name in the answer")
	}
	return ov.Node, nil
}

// ctlSetWatermark sets the memory high watermark through oslogo's
// extension endpoint PUT /api/nodes/{node}/memory-high-watermark
// (RabbitMQ has no HTTP endpoint for it).
func ctlSetWatermark(ctx context.Context, r *ctlRun, a []string) error {
	var body map[string]any
	var shown string
	switch {
	case len(a) == 1:
		f, err := strconv.ParseFloat(a[0], 64)
		if err != nil || f < 0 || f > 1 {
			return usageError(fmt.Errorf("set_vm_memory_high_watermark: the threshold should be a fraction between 0.0 and 1.0, not %q", a[0]))
		}
		body, shown = map[string]any{"fraction": f}, a[0]
	case a[0] == "absolute":
		n, err := parseBytes(a[1])
		if err != nil {
			return usageError(fmt.Errorf("set_vm_memory_high_watermark absolute: %v", err))
		}
		body, shown = map[string]any{"bytes": n}, strconv.FormatInt(n, 10)+" bytes"
	default:
		return usageError(errors.New("usage: oslogo ctl set_vm_memory_high_watermark <fraction> | absolute <bytes>"))
	}
	node, err := nodeName(ctx, r)
	if err != nil {
		return err
	}
	r.banner("Setting memory threshold on %s to %s ...", node, shown)
	err = r.c.Put(ctx, mgmtclient.Path("nodes", node, "memory-high-watermark"), body)
	var ae *mgmtclient.APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
		return fmt.Errorf("%w (the memory watermark endpoint is oslogo's extension; RabbitMQ has none: use rabbitmqctl there)", err)
	}
	return err
}

// parseBytes reads 1073741824, 1GB, 512MiB and the like (rabbitmqctl's
// units: k/K, M, G with B or iB).
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000},
		{"GB", 1000 * 1000 * 1000}, {"k", 1 << 10}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a number of bytes", s)
	}
	return n * mult, nil
}

// ctlStatus prints the parts of rabbitmqctl status the API can tell.
func ctlStatus(ctx context.Context, r *ctlRun, _ []string) error {
	var ov struct {
		Node            string `json:"node"`
		RabbitMQVersion string `json:"rabbitmq_version"`
		ProductName     string `json:"product_name"`
		ProductVersion  string `json:"product_version"`
		Listeners       []struct {
			Protocol string      `json:"protocol"`
			IP       string      `json:"ip_address"`
			Port     json.Number `json:"port"`
		} `json:"listeners"`
	}
	if err := r.c.Get(ctx, mgmtclient.Path("overview"), &ov); err != nil {
		return err
	}
	var nodes []struct {
		Name          string      `json:"name"`
		OSPid         string      `json:"os_pid"`
		Uptime        json.Number `json:"uptime"`
		MemUsed       json.Number `json:"mem_used"`
		MemLimit      json.Number `json:"mem_limit"`
		MemAlarm      bool        `json:"mem_alarm"`
		DiskFreeAlarm bool        `json:"disk_free_alarm"`
	}
	if err := r.c.Get(ctx, mgmtclient.Path("nodes"), &nodes); err != nil {
		return err
	}
	i := 0
	for j, n := range nodes {
		if n.Name == ov.Node {
			i = j
		}
	}
	if len(nodes) == 0 {
		return errors.New("GET /api/nodes: no node")
	}
	n := nodes[i]
	up, _ := n.Uptime.Int64()
	if r.json {
		out := map[string]any{"node_name": ov.Node, "pid": n.OSPid, "uptime": up / 1000,
			"rabbitmq_version": ov.RabbitMQVersion, "product_name": ov.ProductName, "product_version": ov.ProductVersion,
			"mem_used": n.MemUsed, "mem_limit": n.MemLimit, "mem_alarm": n.MemAlarm, "disk_free_alarm": n.DiskFreeAlarm,
			"listeners": ov.Listeners}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(r.env.stdout, "%s\n", b)
		return err
	}
	var b strings.Builder
	if !r.quiet {
		fmt.Fprintf(&b, "Status of node %s ...\n", ov.Node)
	}
	fmt.Fprintf(&b, "Runtime\n\nOS PID: %s\nUptime (seconds): %d\nRabbitMQ version: %s\nNode name: %s\n",
		n.OSPid, up/1000, ov.RabbitMQVersion, ov.Node)
	if ov.ProductName != "" {
		fmt.Fprintf(&b, "Product name: %s\nProduct version: %s\n", ov.ProductName, ov.ProductVersion)
	}
	b.WriteString("\nAlarms\n\n")
	switch {
	case n.MemAlarm && n.DiskFreeAlarm:
		fmt.Fprintf(&b, "Memory alarm on node %s\nFree disk space alarm on node %s\n", ov.Node, ov.Node)
	case n.MemAlarm:
		fmt.Fprintf(&b, "Memory alarm on node %s\n", ov.Node)
	case n.DiskFreeAlarm:
		fmt.Fprintf(&b, "Free disk space alarm on node %s\n", ov.Node)
	default:
		b.WriteString("(none)\n")
	}
	fmt.Fprintf(&b, "\nMemory\n\nTotal memory used: %s bytes\nMemory high watermark: %s bytes\n", n.MemUsed, n.MemLimit)
	b.WriteString("\nListeners\n\n")
	for _, l := range ov.Listeners {
		fmt.Fprintf(&b, "Interface: %s, port: %s, protocol: %s\n", l.IP, l.Port, l.Protocol)
	}
	_, err := fmt.Fprint(r.env.stdout, b.String())
	return err
}
