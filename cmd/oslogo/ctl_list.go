package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/oslogo/oslogo/internal/mgmtclient"
)

// listSpec is one list_* command: where its rows come from, rabbitmqctl's
// banner, default columns and the columns it knows.
type listSpec struct {
	name     string
	path     func(r *ctlRun) string
	banner   func(r *ctlRun) string
	defaults []string
	// fields are the columns it accepts; a column is read from the API
	// object's field of the same name unless alias names a dotted path or
	// a constant.
	fields []string
	alias  map[string]string
	// noFields: the command takes no column arguments (list_users,
	// list_permissions, list_policies).
	noFields bool
	// filter keeps a row (list_permissions reads every vhost's).
	filter func(r *ctlRun, row map[string]any) bool
	// jsonCols are printed as compact JSON in the table (a policy's
	// definition, as rabbitmqctl prints it).
	jsonCols []string
	// emptyJSON is what --formatter json prints for no rows.
	emptyJSON string
	// emptyTable is printed after the banner when there are no rows.
	emptyTable string
}

var listSpecs = []listSpec{
	{name: "list_queues", path: func(r *ctlRun) string { return mgmtclient.Path("queues", r.vhost) },
		banner: func(r *ctlRun) string {
			return fmt.Sprintf("Timeout: %.1f seconds ...\nListing queues for vhost %s ...", r.timeout.Seconds(), r.vhost)
		},
		defaults: []string{"name", "messages"},
		fields: []string{"name", "durable", "auto_delete", "arguments", "policy", "pid", "owner_pid", "exclusive",
			"exclusive_consumer_pid", "exclusive_consumer_tag", "messages_ready", "messages_unacknowledged", "messages",
			"messages_ready_ram", "messages_unacknowledged_ram", "messages_ram", "messages_persistent", "message_bytes",
			"message_bytes_ready", "message_bytes_unacknowledged", "message_bytes_ram", "message_bytes_persistent",
			"head_message_timestamp", "disk_reads", "disk_writes", "consumers", "consumer_utilisation",
			"consumer_capacity", "memory", "state", "type", "node", "vhost"},
		alias: map[string]string{"pid": "node", "owner_pid": "owner_pid_details.name"}},
	{name: "list_exchanges", path: func(r *ctlRun) string { return mgmtclient.Path("exchanges", r.vhost) },
		banner:   func(r *ctlRun) string { return fmt.Sprintf("Listing exchanges for vhost %s ...", r.vhost) },
		defaults: []string{"name", "type"},
		fields:   []string{"name", "type", "durable", "auto_delete", "internal", "arguments", "policy", "vhost"}},
	{name: "list_bindings", path: func(r *ctlRun) string { return mgmtclient.Path("bindings", r.vhost) },
		banner:   func(r *ctlRun) string { return fmt.Sprintf("Listing bindings for vhost %s...", r.vhost) },
		defaults: []string{"source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"},
		fields:   []string{"source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments", "vhost"},
		alias: map[string]string{"source_name": "source", "source_kind": "=exchange", "destination_name": "destination",
			"destination_kind": "destination_type"}},
	{name: "list_connections", path: func(r *ctlRun) string { return mgmtclient.Path("connections") },
		banner:   func(r *ctlRun) string { return "Listing connections ..." },
		defaults: []string{"user", "peer_host", "peer_port", "state"},
		fields: []string{"pid", "name", "port", "host", "peer_port", "peer_host", "ssl", "ssl_protocol", "ssl_key_exchange",
			"ssl_cipher", "ssl_hash", "peer_cert_subject", "peer_cert_issuer", "peer_cert_validity", "state", "channels",
			"protocol", "auth_mechanism", "user", "vhost", "timeout", "frame_max", "channel_max", "client_properties",
			"recv_oct", "recv_cnt", "send_oct", "send_cnt", "send_pend", "connected_at", "user_provided_name", "node", "type"},
		alias: map[string]string{"pid": "name"}},
	{name: "list_channels", path: func(r *ctlRun) string { return mgmtclient.Path("channels") },
		banner:   func(r *ctlRun) string { return "Listing channels ..." },
		defaults: []string{"pid", "user", "consumer_count", "messages_unacknowledged"},
		fields: []string{"pid", "name", "connection", "number", "user", "vhost", "transactional", "confirm", "consumer_count",
			"messages_unacknowledged", "messages_uncommitted", "acks_uncommitted", "messages_unconfirmed", "prefetch_count",
			"global_prefetch_count", "state", "node"},
		alias: map[string]string{"pid": "name", "connection": "connection_details.name"}},
	{name: "list_consumers", path: func(r *ctlRun) string { return mgmtclient.Path("consumers", r.vhost) },
		banner:   func(r *ctlRun) string { return fmt.Sprintf("Listing consumers in vhost %s ...", r.vhost) },
		defaults: []string{"queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "arguments"},
		fields: []string{"queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active",
			"activity_status", "arguments", "exclusive"},
		alias: map[string]string{"queue_name": "queue.name", "channel_pid": "channel_details.name"}},
	{name: "list_users", path: func(r *ctlRun) string { return mgmtclient.Path("users") },
		banner:   func(r *ctlRun) string { return "Listing users ..." },
		defaults: []string{"user", "tags"}, noFields: true, alias: map[string]string{"user": "name"}},
	{name: "list_permissions", path: func(r *ctlRun) string { return mgmtclient.Path("permissions") },
		banner:   func(r *ctlRun) string { return fmt.Sprintf("Listing permissions for vhost \"%s\" ...", r.vhost) },
		defaults: []string{"user", "configure", "write", "read"}, noFields: true,
		filter: func(r *ctlRun, row map[string]any) bool { return row["vhost"] == r.vhost }},
	{name: "list_vhosts", path: func(r *ctlRun) string { return mgmtclient.Path("vhosts") },
		banner:   func(r *ctlRun) string { return "Listing vhosts ..." },
		defaults: []string{"name"},
		fields:   []string{"name", "description", "tags", "tracing", "cluster_state", "default_queue_type", "metadata"}},
	{name: "list_policies", path: func(r *ctlRun) string { return mgmtclient.Path("policies", r.vhost) },
		banner:   func(r *ctlRun) string { return fmt.Sprintf("Listing policies for vhost \"%s\" ...", r.vhost) },
		defaults: []string{"vhost", "name", "pattern", "apply-to", "definition", "priority"}, noFields: true,
		jsonCols: []string{"definition"}, emptyJSON: "[]\n", emptyTable: "\n"},
}

func init() {
	for i := range listSpecs {
		sp := &listSpecs[i]
		syn := "[-p vhost] [column ...]"
		if sp.noFields {
			syn = "[-p vhost]"
		}
		max := -1
		if sp.noFields {
			max = 0
		}
		ctlCmds[sp.name] = &ctlCmd{synopsis: syn, max: max, run: sp.run}
	}
}

func (sp *listSpec) run(ctx context.Context, r *ctlRun, args []string) error {
	cols := sp.defaults
	if len(args) > 0 {
		known := map[string]bool{}
		for _, f := range sp.fields {
			known[f] = true
		}
		var bad []string
		for _, a := range args {
			if !known[a] {
				bad = append(bad, a)
			}
		}
		if len(bad) > 0 {
			return usageError(fmt.Errorf("%s: unknown column(s) %s; known: %s", sp.name,
				strings.Join(bad, ", "), strings.Join(sp.fields, " ")))
		}
		cols = args
	}
	var rows []map[string]any
	if err := r.c.Get(ctx, sp.path(r), &rows); err != nil {
		return err
	}
	if sp.filter != nil {
		kept := rows[:0]
		for _, row := range rows {
			if sp.filter(r, row) {
				kept = append(kept, row)
			}
		}
		rows = kept
	}
	table := make([][]any, len(rows))
	for i, row := range rows {
		for _, c := range cols {
			table[i] = append(table[i], sp.value(row, c))
		}
	}
	if r.json {
		return writeJSONRows(r.env.stdout, cols, table, sp.emptyJSON)
	}
	if !r.quiet {
		fmt.Fprintln(r.env.stdout, sp.banner(r))
	}
	if len(rows) == 0 {
		if !r.quiet {
			fmt.Fprint(r.env.stdout, sp.emptyTable)
		}
		return nil
	}
	for j, c := range cols {
		if slices.Contains(sp.jsonCols, c) {
			for _, row := range table {
				b, _ := json.Marshal(row[j])
				row[j] = string(b)
			}
		}
	}
	writeTableRows(r.env.stdout, cols, table, !r.noHeaders)
	return nil
}

// value reads column c of an API object.
func (sp *listSpec) value(row map[string]any, c string) any {
	path := c
	if a, ok := sp.alias[c]; ok {
		if k, isConst := strings.CutPrefix(a, "="); isConst {
			return k
		}
		path = a
	}
	var v any = row
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// writeTableRows prints rabbitmqctl's table: a header row and one
// tab-separated row per object.
func writeTableRows(w io.Writer, cols []string, rows [][]any, header bool) {
	var b bytes.Buffer
	if header {
		b.WriteString(strings.Join(cols, "\t"))
		b.WriteByte('\n')
	}
	for _, row := range rows {
		for i, v := range row {
			if i > 0 {
				b.WriteByte('\t')
			}
			b.WriteString(tableValue(v))
		}
		b.WriteByte('\n')
	}
	_, _ = w.Write(b.Bytes())
}

// writeJSONRows prints rabbitmqctl's --formatter json: an array with one
// object per line, columns in the order asked.
func writeJSONRows(w io.Writer, cols []string, rows [][]any, empty string) error {
	if len(rows) == 0 {
		if empty == "" {
			empty = "[\n]\n"
		}
		_, err := io.WriteString(w, empty)
		return err
	}
	var b bytes.Buffer
	b.WriteString("[\n")
	for i, row := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('{')
		for j, v := range row {
			if j > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(cols[j])
			b.Write(k)
			b.WriteByte(':')
			enc, err := json.Marshal(v)
			if err != nil {
				return err
			}
			b.Write(enc)
		}
		b.WriteString("}\n")
	}
	b.WriteString("]\n")
	_, err := w.Write(b.Bytes())
	return err
}

// tableValue writes a value as rabbitmqctl's table does: strings bare,
// lists of strings as [a, b], tables (queue arguments, client properties)
// as [{"key",value}], nested values quoted.
func tableValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []any:
		if allStrings(x) {
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = e.(string)
			}
			return "[" + strings.Join(parts, ", ") + "]"
		}
	}
	return erlangValue(v)
}

func allStrings(l []any) bool {
	for _, e := range l {
		if _, ok := e.(string); !ok {
			return false
		}
	}
	return true
}

// erlangValue renders nested values: strings quoted, tables as
// [{"k",v},...] with sorted keys, lists as [a,b].
func erlangValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		b, _ := json.Marshal(x)
		return string(b)
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "true"
		}
		return "false"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = erlangValue(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = "{" + erlangValue(k) + "," + erlangValue(x[k]) + "}"
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
}
