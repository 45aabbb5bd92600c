package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
)

// pairedRow is one round-trip row measured on two brokers back to back.
type pairedRow struct {
	callers     int
	mine, other float64
}

// readPairs reads the alternating round-trip runs bench.sh writes (one
// JSON object per run, a pair being two consecutive lines for the same row,
// one from name and one from ref, in either order) and returns the pairs.
// A line that failed breaks its pair: that pair is left out and reported.
func readPairs(r io.Reader, name, ref string) ([]pairedRow, []string, error) {
	var lines []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var res Result
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
			return nil, nil, fmt.Errorf("paired results: %v", err)
		}
		lines = append(lines, res)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(lines)%2 != 0 {
		return nil, nil, fmt.Errorf("paired results: %d lines, want pairs", len(lines))
	}
	var pairs []pairedRow
	var problems []string
	for i := 0; i < len(lines); i += 2 {
		a, b := lines[i], lines[i+1]
		if a.Name == ref {
			a, b = b, a
		}
		if a.Name != name || b.Name != ref {
			return nil, nil, fmt.Errorf("paired results: lines %d-%d are %q and %q, want %q and %q", i+1, i+2, lines[i].Name, lines[i+1].Name, name, ref)
		}
		p := pairedRow{callers: 1, mine: a.RoundTrips1, other: b.RoundTrips1}
		if a.RoundTrips8 != 0 || b.RoundTrips8 != 0 {
			p = pairedRow{callers: 8, mine: a.RoundTrips8, other: b.RoundTrips8}
		}
		if p.mine == 0 || p.other == 0 {
			problems = append(problems, fmt.Sprintf("lines %d-%d: a run failed (%v %v)", i+1, i+2, a.Errors, b.Errors))
			continue
		}
		pairs = append(pairs, p)
	}
	return pairs, problems, nil
}

// pairedTable prints each pair's ratio and, per row, their median.
func pairedTable(in, name, ref string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	pairs, problems, err := readPairs(f, name, ref)
	if err != nil {
		return err
	}
	if len(pairs) == 0 {
		return fmt.Errorf("paired results: no complete pair in %s", in)
	}
	fmt.Printf("\n| round trips, back-to-back pairs | %s /s | %s /s | ratio |\n|---|---:|---:|---:|\n", name, ref)
	for _, callers := range []int{1, 8} {
		var ratios []float64
		for _, p := range pairs {
			if p.callers != callers {
				continue
			}
			r := p.mine / p.other
			ratios = append(ratios, r)
			fmt.Printf("| %s | %.0f | %.0f | %.2fx |\n", callersLabel(callers), p.mine, p.other, r)
		}
		if len(ratios) > 0 {
			fmt.Printf("| **%s, median of %d** | | | **%.2fx** |\n", callersLabel(callers), len(ratios), median(ratios))
		}
	}
	for _, p := range problems {
		fmt.Println("\n" + p)
	}
	return nil
}

func callersLabel(n int) string {
	if n == 1 {
		return "1 caller"
	}
	return fmt.Sprintf("%d callers", n)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
