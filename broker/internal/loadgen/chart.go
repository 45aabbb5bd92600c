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
	// Lines with the same name (one per step for a broker restarted
	// between steps) merge: later non-zero fields win (the
	// largest after-load RSS), errors accumulate.
	var rs []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r Result
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Name == "" {
			continue
		}
		merged := false
		for i := range rs {
			if rs[i].Name == r.Name {
				mergeResult(&rs[i], &r)
				merged = true
			}
		}
		if !merged {
			rs = append(rs, r)
		}
	}
	table(rs, ref)
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
	scale := float64(w-left-170) / maxRatio
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

func mergeResult(dst, src *Result) {
	set := func(d *float64, v float64) {
		if v != 0 {
			*d = v
		}
	}
	set(&dst.TransientMsgs, src.TransientMsgs)
	set(&dst.PersistentSeconds, src.PersistentSeconds)
	set(&dst.PersistentMsgs, src.PersistentMsgs)
	set(&dst.RoundTrips1, src.RoundTrips1)
	set(&dst.RoundTrips8, src.RoundTrips8)
	set(&dst.FanoutDeliveries, src.FanoutDeliveries)
	set(&dst.TopicMsgs, src.TopicMsgs)
	set(&dst.MillionRSSMB, src.MillionRSSMB)
	if dst.IdleRSSMB == 0 {
		dst.IdleRSSMB = src.IdleRSSMB
	}
	// A broker restarted per step reports one after-load reading per
	// step, each after that step's load only: keep the largest.
	dst.AfterLoadRSSMB = max(dst.AfterLoadRSSMB, src.AfterLoadRSSMB)
	dst.Errors = append(dst.Errors, src.Errors...)
}

// table prints the merged results and the target ratios as Markdown.
func table(rs []Result, ref string) {
	var base *Result
	for i := range rs {
		if rs[i].Name == ref {
			base = &rs[i]
		}
	}
	f := func(v float64, format string) string {
		if v == 0 {
			return "failed"
		}
		return fmt.Sprintf(format, v)
	}
	fmt.Print("| broker | transient msg/s | 20k persistent+confirm (s) | round trips/s, 1 caller | 8 callers | fanout deliveries/s (10 queues) | topic msg/s (10k bindings) | RSS idle MB | RSS after load MB | RSS 1M queued MB |\n")
	fmt.Print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Name,
			f(r.TransientMsgs, "%.0f"), f(r.PersistentSeconds, "%.3f"), f(r.RoundTrips1, "%.0f"), f(r.RoundTrips8, "%.0f"),
			f(r.FanoutDeliveries, "%.0f"), f(r.TopicMsgs, "%.0f"), f(r.IdleRSSMB, "%.1f"), f(r.AfterLoadRSSMB, "%.1f"), f(r.MillionRSSMB, "%.0f"))
	}
	if base == nil {
		return
	}
	fmt.Print("\n| ratio vs " + ref + " | measured | target | met |\n|---|---:|---:|---|\n")
	for _, r := range rs {
		if r.Name != "oslogo" {
			continue
		}
		ratio := func(a, b float64) float64 {
			if b == 0 {
				return 0
			}
			return a / b
		}
		row := func(what string, v, target float64) {
			met := "no"
			if v >= target {
				met = "yes"
			}
			fmt.Printf("| %s: %s | %.2fx | >= %.0fx | %s |\n", r.Name, what, v, target, met)
		}
		row("transient throughput", ratio(r.TransientMsgs, base.TransientMsgs), 3)
		row("round trips, 1 caller", ratio(r.RoundTrips1, base.RoundTrips1), 2)
		row("round trips, 8 callers", ratio(r.RoundTrips8, base.RoundTrips8), 2)
		row("persistent with confirms", ratio(base.PersistentSeconds, r.PersistentSeconds), 3)
		{
			met := "no"
			if r.IdleRSSMB > 0 && r.IdleRSSMB < 20 {
				met = "yes"
			}
			fmt.Printf("| %s: idle RSS | %.1f MB | < 20 MB | %s |\n", r.Name, r.IdleRSSMB, met)
		}
	}
	compareTo(rs, "oslogo", "strangeq")
	for _, r := range rs {
		for _, e := range r.Errors {
			fmt.Printf("\n%s: %s", r.Name, e)
		}
	}
	fmt.Println()
}

// compareTo prints, when both ran, a row per figure of name beside other
// and whether name is ahead (the issue aims past StrangeQ on every row).
func compareTo(rs []Result, name, other string) {
	var a, b *Result
	for i := range rs {
		switch rs[i].Name {
		case name:
			a = &rs[i]
		case other:
			b = &rs[i]
		}
	}
	if a == nil || b == nil {
		return
	}
	fmt.Printf("\n| %s vs %s | %s | %s | ahead |\n|---|---:|---:|---|\n", name, other, name, other)
	row := func(what string, x, y float64, format string, lowerBetter bool) {
		ahead := "yes"
		switch {
		case x == 0:
			ahead = "no (" + name + " failed)"
		case y == 0:
			ahead = "yes (" + other + " failed)"
		case lowerBetter && x >= y, !lowerBetter && x <= y:
			ahead = "no"
		}
		fx, fy := fmt.Sprintf(format, x), fmt.Sprintf(format, y)
		if y == 0 {
			fy = "failed"
		}
		fmt.Printf("| %s | %s | %s | %s |\n", what, fx, fy, ahead)
	}
	row("transient msg/s", a.TransientMsgs, b.TransientMsgs, "%.0f", false)
	row("20k persistent+confirm (s)", a.PersistentSeconds, b.PersistentSeconds, "%.3f", true)
	row("round trips/s, 1 caller", a.RoundTrips1, b.RoundTrips1, "%.0f", false)
	row("round trips/s, 8 callers", a.RoundTrips8, b.RoundTrips8, "%.0f", false)
	row("fanout deliveries/s", a.FanoutDeliveries, b.FanoutDeliveries, "%.0f", false)
	row("topic msg/s", a.TopicMsgs, b.TopicMsgs, "%.0f", false)
	row("RSS after load MB", a.AfterLoadRSSMB, b.AfterLoadRSSMB, "%.1f", true)
}
