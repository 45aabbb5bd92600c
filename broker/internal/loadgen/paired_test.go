package main

import (
	"strings"
	"testing"
)

func TestReadPairs(t *testing.T) {
	in := strings.Join([]string{
		`{"name":"oslogo","round_trips_per_s_1":6000}`,
		`{"name":"rabbitmq-3.10","round_trips_per_s_1":3000}`,
		`{"name":"rabbitmq-3.10","round_trips_per_s_8":9000}`, // reference first
		`{"name":"oslogo","round_trips_per_s_8":18900}`,
		`{"name":"oslogo","round_trips_per_s_1":5000}`,
		`{"name":"rabbitmq-3.10","errors":["rtt: no reply"]}`, // a failed run
	}, "\n")
	pairs, problems, err := readPairs(strings.NewReader(in), "oslogo", "rabbitmq-3.10")
	if err != nil {
		t.Fatal(err)
	}
	want := []pairedRow{{1, 6000, 3000}, {8, 18900, 9000}}
	if len(pairs) != len(want) {
		t.Fatalf("pairs = %+v, want %+v", pairs, want)
	}
	for i := range want {
		if pairs[i] != want[i] {
			t.Errorf("pair %d = %+v, want %+v", i, pairs[i], want[i])
		}
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "no reply") {
		t.Errorf("problems = %q, want the failed pair reported", problems)
	}
}

func TestReadPairsRejectsMismatches(t *testing.T) {
	for name, in := range map[string]string{
		"odd line count": `{"name":"oslogo","round_trips_per_s_1":1}`,
		"same broker twice": `{"name":"oslogo","round_trips_per_s_1":1}` + "\n" +
			`{"name":"oslogo","round_trips_per_s_1":2}`,
		"not JSON": "oslogo 1\nrabbit 2",
	} {
		if _, _, err := readPairs(strings.NewReader(in), "oslogo", "rabbitmq-3.10"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
