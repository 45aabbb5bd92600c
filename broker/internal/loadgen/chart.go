package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// chart renders results (one JSON object per line) as grouped bars, each
// metric as a multiple of the first broker listed after the reference.
func chart(in, out, ref string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	var rs []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r Result
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Name != "" {
			rs = append(rs, r)
		}
	}
	var base *Result
	for i := range rs {
		if rs[i].Name == ref {
			base = &rs[i]
		}
	}
	if base == nil {
		return fmt.Errorf("no results for reference %q", ref)
	}
	type metric struct {
		label string
		get   func(r *Result) float64
	}
	metrics := []metric{
		{"transient msg/s", func(r *Result) float64 { return r.TransientMsgs }},
		{"persistent+confirm msg/s", func(r *Result) float64 { return r.PersistentMsgs }},
		{"round trips/s, 1 caller", func(r *Result) float64 { return r.RoundTrips1 }},
		{"round trips/s, 8 callers", func(r *Result) float64 { return r.RoundTrips8 }},
		{"fanout deliveries/s", func(r *Result) float64 { return r.FanoutDeliveries }},
		{"topic msg/s (10k bindings)", func(r *Result) float64 { return r.TopicMsgs }},
	}
	colors := []color.RGBA{{0x1f, 0x77, 0xb4, 255}, {0xff, 0x7f, 0x0e, 255}, {0x2c, 0xa0, 0x2c, 255}, {0xd6, 0x27, 0x28, 255}}
	const w, rowH, left, top = 900, 60, 210, 50
	h := top + rowH*len(metrics) + 40
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	text(10, 18, fmt.Sprintf("Throughput relative to %s (=1.0x), higher is better; one run, 2 cores", ref), color.Black)
	for i, r := range rs {
		x := 10 + i*200
		draw.Draw(img, image.Rect(x, 26, x+12, 38), image.NewUniform(colors[i%len(colors)]), image.Point{}, draw.Src)
		text(x+16, 37, r.Name, color.Black)
	}
	maxRatio := 1.0
	for _, m := range metrics {
		b := m.get(base)
		for i := range rs {
			if b > 0 {
				maxRatio = max(maxRatio, m.get(&rs[i])/b)
			}
		}
	}
	scale := float64(w-left-80) / maxRatio
	for mi, m := range metrics {
		y0 := top + mi*rowH
		text(10, y0+rowH/2+4, m.label, color.Black)
		b := m.get(base)
		barH := (rowH - 10) / len(rs)
		for i := range rs {
			v := m.get(&rs[i])
			ratio := 0.0
			if b > 0 {
				ratio = v / b
			}
			y := y0 + 5 + i*barH
			draw.Draw(img, image.Rect(left, y, left+int(ratio*scale), y+barH-2), image.NewUniform(colors[i%len(colors)]), image.Point{}, draw.Src)
			label := fmt.Sprintf("%.2fx (%.0f)", ratio, v)
			if v == 0 {
				label = "failed / not run"
			}
			text(left+int(ratio*scale)+4, y+barH-4, label, color.Black)
		}
	}
	// 1.0x reference line.
	x1 := left + int(scale)
	for y := top; y < top+rowH*len(metrics); y++ {
		img.Set(x1, y, color.Gray{0x80})
	}
	o, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(o, img); err != nil {
		o.Close()
		return err
	}
	return o.Close()
}
