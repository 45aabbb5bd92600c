package broker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// List query parameters of RabbitMQ's management API, applied to a list
// answer after it is encoded: name filter (with page only, as RabbitMQ),
// sort, sort_reverse, pagination (page, page_size) and columns. Error
// bodies are RabbitMQ 3.10.8's (measured).

const (
	defaultPageSize = 100
	maxPageSize     = 500
)

// writeList answers a list, applying the request's list parameters.
func (m *mgmtRequest) writeList(v any) {
	q := m.r.URL.Query()
	if !q.Has("sort") && !q.Has("sort_reverse") && !q.Has("columns") && !q.Has("page") {
		writeJSON(m.w, http.StatusOK, v)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var items []any
	if err := dec.Decode(&items); err != nil {
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	total := len(items)
	paged := q.Has("page")
	page, pageSize := 1, defaultPageSize
	if paged {
		var ok bool
		if page, pageSize, ok = m.pagination(); !ok {
			return
		}
		if name := q.Get("name"); name != "" {
			var match func(string) bool
			if q.Get("use_regex") == "true" {
				re, err := regexp.Compile("(?i)" + name)
				if err != nil {
					writeError(m.w, http.StatusBadRequest, "bad_request", "Pagination parameters are invalid")
					return
				}
				match = re.MatchString
			} else {
				lower := strings.ToLower(name)
				match = func(s string) bool { return strings.Contains(strings.ToLower(s), lower) }
			}
			items = slices.DeleteFunc(items, func(it any) bool {
				s, _ := lookupPath(it, "name").(string)
				return !match(s)
			})
		}
	}
	if key := q.Get("sort"); key != "" {
		slices.SortStableFunc(items, func(a, b any) int { return compareJSON(lookupPath(a, key), lookupPath(b, key)) })
	}
	if q.Get("sort_reverse") == "true" {
		slices.Reverse(items)
	}
	filtered := len(items)
	if paged {
		pageCount := (filtered + pageSize - 1) / pageSize
		if page > 1 && page > pageCount {
			writeError(m.w, http.StatusBadRequest, "page_out_of_range",
				fmt.Sprintf("Page out of range, page: %d page size: %d, len: %d", page, pageSize, filtered))
			return
		}
		lo := min((page-1)*pageSize, filtered)
		items = items[lo:min(lo+pageSize, filtered)]
		out := map[string]any{"filtered_count": filtered, "item_count": len(items), "page": page,
			"page_count": pageCount, "page_size": pageSize, "total_count": total}
		out["items"] = projectColumns(items, q.Get("columns"))
		writeJSON(m.w, http.StatusOK, out)
		return
	}
	writeJSON(m.w, http.StatusOK, projectColumns(items, q.Get("columns")))
}

// pagination parses page and page_size, answering RabbitMQ's errors.
func (m *mgmtRequest) pagination() (page, size int, ok bool) {
	q := m.r.URL.Query()
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", "Pagination parameters are invalid")
		return 0, 0, false
	}
	size, sizeText := defaultPageSize, "undefined"
	if q.Has("page_size") {
		if size, err = strconv.Atoi(q.Get("page_size")); err != nil {
			writeError(m.w, http.StatusBadRequest, "bad_request", "Pagination parameters are invalid")
			return 0, 0, false
		}
		sizeText = strconv.Itoa(size)
	}
	if page < 1 || size < 1 || size > maxPageSize {
		writeError(m.w, http.StatusBadRequest, "invalid_pagination_parameters",
			fmt.Sprintf("Invalid pagination parameters: page number %d, page size %s", page, sizeText))
		return 0, 0, false
	}
	return page, size, true
}

// lookupPath returns the value at a dotted path ("message_stats.publish")
// of a decoded JSON object, or nil.
func lookupPath(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[k]
	}
	return v
}

// compareJSON orders missing values first, then booleans, numbers and
// strings each in their natural order.
func compareJSON(a, b any) int {
	rank := func(v any) int {
		switch v.(type) {
		case nil:
			return 0
		case bool:
			return 1
		case json.Number:
			return 2
		case string:
			return 3
		}
		return 4
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra - rb
	}
	switch x := a.(type) {
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case json.Number:
		fx, _ := x.Float64()
		fy, _ := b.(json.Number).Float64()
		switch {
		case fx < fy:
			return -1
		case fx > fy:
			return 1
		}
		return 0
	case string:
		return strings.Compare(x, b.(string))
	}
	return 0
}

// projectColumns keeps only the listed (dotted) columns of each item;
// unknown columns are left out, as RabbitMQ does.
func projectColumns(items []any, columns string) []any {
	if columns == "" {
		return items
	}
	cols := strings.Split(columns, ",")
	out := make([]any, len(items))
	for i, it := range items {
		o := map[string]any{}
		for _, c := range cols {
			v := lookupPath(it, c)
			if v == nil {
				if obj, ok := it.(map[string]any); !ok || !hasPath(obj, c) {
					continue
				}
			}
			setPath(o, c, v)
		}
		out[i] = o
	}
	return out
}

func hasPath(obj map[string]any, path string) bool {
	parts := strings.Split(path, ".")
	var v any = obj
	for _, k := range parts {
		o, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = o[k]; !ok {
			return false
		}
	}
	return true
}

func setPath(o map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, k := range parts[:len(parts)-1] {
		next, ok := o[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			o[k] = next
		}
		o = next
	}
	o[parts[len(parts)-1]] = v
}
