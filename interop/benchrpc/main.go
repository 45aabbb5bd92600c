// Command benchrpc turns the JSON lines of `make bench-rpc` into the
// markdown table of docs/BENCHMARKS.md (on stdout) and a PNG bar chart.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"log"
	"os"

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
	flag.Parse()
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
	find := func(impl, mode string, c int) float64 {
		for _, r := range rs {
			if r.Impl == impl && r.Mode == mode && r.Concurrency == c {
				return r.Rate
			}
		}
		return 0
	}
	fmt.Println("| implementation | mode | callers | msgs/s | p50 ms | p99 ms |")
	fmt.Println("|---|---|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Printf("| %s | %s | %d | %.0f | %.2f | %.2f |\n", r.Impl, r.Mode, r.Concurrency, r.Rate, r.P50ms, r.P99ms)
	}
	fmt.Println()
	fmt.Println("| ratio | measured | target |")
	fmt.Println("|---|---:|---:|")
	ratio := func(name string, a, b, target float64, pct bool) {
		if a == 0 || b == 0 {
			return
		}
		if pct {
			fmt.Printf("| %s | %.0f%% | >= %.0f%% |\n", name, 100*a/b, 100*target)
		} else {
			fmt.Printf("| %s | %.1fx | >= %.1fx |\n", name, a/b, target)
		}
	}
	ratio("oslogo call / bare floor, 1 caller", find("oslogo", "call", 1), find("amqp091-go", "call", 1), 0.9, true)
	ratio("oslogo call / bare floor, 8 callers", find("oslogo", "call", 8), find("amqp091-go", "call", 8), 0.9, true)
	ratio("oslogo call / Python, 1 caller", find("oslogo", "call", 1), find("python-oslo.messaging", "call", 1), 3.5, false)
	ratio("oslogo call / Python, 8 callers", find("oslogo", "call", 8), find("python-oslo.messaging", "call", 8), 8, false)
	ratio("oslogo cast / Python cast", find("oslogo", "cast", 8), find("python-oslo.messaging", "cast", 8), 10, false)

	if err := chart(*out, rs); err != nil {
		log.Fatal(err)
	}
}

var palette = map[string]color.RGBA{
	"oslogo":                {0x1f, 0x77, 0xb4, 0xff},
	"amqp091-go":            {0x7f, 0x7f, 0x7f, 0xff},
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
