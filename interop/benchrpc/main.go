// Command benchrpc turns the JSON lines of `make bench-rpc` into the
// markdown table of docs/BENCHMARKS.md (on stdout) and a PNG bar chart.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"log"
	"os"
	"slices"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

type result struct {
	Impl        string  `json:"impl"`
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Count       int     `json:"count"`
	Rate        float64 `json:"rate"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
}

func main() {
	in := flag.String("in", "docs/bench/rpc-results.jsonl", "results (JSON lines)")
	out := flag.String("png", "docs/bench/rpc.png", "chart to write")
	peers := flag.Bool("peers", false, "print the table of `make bench-peers` (interop/benchrpc/peers.sh) instead")
	flag.Parse()
	if *peers {
		if err := peerTable(*in); err != nil {
			log.Fatal(err)
		}
		return
	}
	f, err := os.Open(*in)
	if err != nil {
		log.Fatal(err)
	}
	var rs []result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Rate > 0 {
			rs = append(rs, r)
		}
	}
	_ = f.Close()
	// Rows measured several times (interleaved rounds) are reduced to the
	// run with the median rate; ratios to a floor are the median of the
	// per-round ratios, so each oslogo run is compared with the floor run
	// next to it.
	type key struct {
		impl, mode string
		c          int
	}
	var order []key
	runs := map[key][]result{}
	for _, r := range rs {
		k := key{r.Impl, r.Mode, r.Concurrency}
		if _, seen := runs[k]; !seen {
			order = append(order, k)
		}
		runs[k] = append(runs[k], r)
	}
	median := func(k key) (result, bool) {
		rr := slices.Clone(runs[k])
		if len(rr) == 0 {
			return result{}, false
		}
		slices.SortFunc(rr, func(a, b result) int { return cmp.Compare(a.Rate, b.Rate) })
		return rr[len(rr)/2], true
	}
	fmt.Println("| implementation | mode | callers | msgs/s | p50 ms | p99 ms | runs |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|")
	var rows []result
	for _, k := range order {
		m, _ := median(k)
		rows = append(rows, m)
		fmt.Printf("| %s | %s | %d | %.0f | %.2f | %.2f | %d |\n", m.Impl, m.Mode, m.Concurrency, m.Rate, m.P50ms, m.P99ms, len(runs[k]))
	}
	fmt.Println()
	fmt.Println("| ratio | measured | target | met |")
	fmt.Println("|---|---:|---:|---|")
	ratio := func(name string, a, b key, target float64, pct bool) {
		ra, rb := runs[a], runs[b]
		if len(ra) == 0 || len(rb) == 0 {
			return
		}
		var v float64
		// Floors are measured next to each oslogo run (paired rounds);
		// Python runs on its own afterwards, so it is compared by median.
		if len(ra) == len(rb) && b.impl != "python-oslo.messaging" {
			rs := make([]float64, len(ra))
			for i := range ra {
				rs[i] = ra[i].Rate / rb[i].Rate
			}
			slices.Sort(rs)
			v = rs[len(rs)/2]
		} else {
			ma, _ := median(a)
			mb, _ := median(b)
			v = ma.Rate / mb.Rate
		}
		met := "no"
		if v >= target {
			met = "yes"
		}
		if target == 0 {
			met = "(reference)"
		}
		switch {
		case pct && target > 0:
			fmt.Printf("| %s | %.0f%% | >= %.0f%% | %s |\n", name, 100*v, 100*target, met)
		case pct:
			fmt.Printf("| %s | %.0f%% | - | %s |\n", name, 100*v, met)
		default:
			fmt.Printf("| %s | %.1fx | >= %.1fx | %s |\n", name, v, target, met)
		}
	}
	o := func(mode string, c int) key { return key{"oslogo", mode, c} }
	bare := func(c int) key { return key{"amqp091-go", "call", c} }
	wire := func(c int) key { return key{"amqp091-go-oslo-wire", "call", c} }
	py := func(mode string, c int) key { return key{"python-oslo.messaging", mode, c} }
	ratio("oslogo call / bare floor, 1 caller", o("call", 1), bare(1), 0.9, true)
	ratio("oslogo call / bare floor, 8 callers", o("call", 8), bare(8), 0.9, true)
	ratio("oslogo call / Python, 1 caller", o("call", 1), py("call", 1), 3.5, false)
	ratio("oslogo call / Python, 8 callers", o("call", 8), py("call", 8), 8, false)
	ratio("oslogo cast / Python cast", o("cast", 8), py("cast", 8), 10, false)
	ratio("oslo-wire floor / bare floor, 1 caller", wire(1), bare(1), 0, true)
	ratio("oslo-wire floor / bare floor, 8 callers", wire(8), bare(8), 0, true)
	ratio("oslogo call / oslo-wire floor, 1 caller", o("call", 1), wire(1), 0, true)
	ratio("oslogo call / oslo-wire floor, 8 callers", o("call", 8), wire(8), 0, true)

	rs = rows
	if err := chart(*out, rs); err != nil {
		log.Fatal(err)
	}
}

var palette = map[string]color.RGBA{
	"oslogo":                {0x1f, 0x77, 0xb4, 0xff},
	"amqp091-go":            {0x7f, 0x7f, 0x7f, 0xff},
	"amqp091-go-oslo-wire":  {0xb0, 0xb0, 0xb0, 0xff},
	"python-oslo.messaging": {0xff, 0x7f, 0x0e, 0xff},
}

// chart draws one horizontal bar per result, scaled to the fastest.
func chart(path string, rs []result) error {
	const w, rowH, left, top = 900, 28, 330, 40
	h := top + rowH*len(rs) + 20
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	maxRate := 1.0
	for _, r := range rs {
		maxRate = max(maxRate, r.Rate)
	}
	text(img, 10, 20, "RPC over RabbitMQ, messages/s (longer is better)", color.Black)
	for i, r := range rs {
		y := top + i*rowH
		label := fmt.Sprintf("%s %s x%d", r.Impl, r.Mode, r.Concurrency)
		text(img, 10, y+18, label, color.Black)
		bw := int(float64(w-left-110) * r.Rate / maxRate)
		c, ok := palette[r.Impl]
		if !ok {
			c = color.RGBA{0x2c, 0xa0, 0x2c, 0xff}
		}
		draw.Draw(img, image.Rect(left, y+4, left+bw, y+rowH-4), &image.Uniform{c}, image.Point{}, draw.Src)
		text(img, left+bw+6, y+18, fmt.Sprintf("%.0f/s", r.Rate), color.Black)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func text(img draw.Image, x, y int, s string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}
