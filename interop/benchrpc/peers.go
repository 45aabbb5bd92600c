package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

// peerRow is one line of `make bench-peers` (interop/benchrpc/peers.sh).
type peerRow struct {
	Impl   string  `json:"impl"`
	Config string  `json:"config"`
	Mode   string  `json:"mode"`
	Count  int     `json:"count"`
	Rate   float64 `json:"rate"`
	P50ms  float64 `json:"p50_ms"`
	Error  string  `json:"error"`
}

// peerTable prints the markdown table of the peers benchmark: one line per
// configuration and implementation, the three modes side by side, and each
// rate's ratio to Python 18.1's in the same configuration.
func peerTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type key struct{ impl, conf, mode string }
	rows := map[key]peerRow{}
	var order []key // (impl, conf) in the order of the run
	seen := map[key]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r peerRow
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Impl == "" {
			continue
		}
		rows[key{r.Impl, r.Config, r.Mode}] = r
		if k := (key{r.Impl, r.Config, ""}); !seen[k] {
			seen[k] = true
			order = append(order, k)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	cell := func(k key) string {
		r, ok := rows[k]
		switch {
		case !ok:
			return "-"
		case r.Error != "":
			return "failed: " + r.Error
		}
		s := fmt.Sprintf("%.0f/s, p50 %.1f ms (n=%d)", r.Rate, r.P50ms, r.Count)
		if ref, ok := rows[key{"python-18.1", k.conf, k.mode}]; ok && k.impl != "python-18.1" && ref.Error == "" && ref.Rate > 0 {
			s += fmt.Sprintf(", %.1fx 18.1", r.Rate/ref.Rate)
		}
		return s
	}
	fmt.Println("| configuration | implementation | call, 1 caller | cast, 1 caller | fanout cast, 1 caller, 1 server |")
	fmt.Println("|---|---|---|---|---|")
	for _, k := range order {
		fmt.Printf("| %s | %s | %s | %s | %s |\n", k.conf, k.impl,
			cell(key{k.impl, k.conf, "call"}), cell(key{k.impl, k.conf, "cast"}), cell(key{k.impl, k.conf, "fanout"}))
	}
	return nil
}
