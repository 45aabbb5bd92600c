package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"log"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

func writeSamples(path string, samples []Sample) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, s := range samples {
		if err := enc.Encode(s); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// window is the mean of the samples whose time lies in [from, to).
type window struct {
	rss, goroutines, p99, callRate float64
	n                              int
}

func mean(samples []Sample, from, to float64) window {
	var w window
	var prev *Sample
	for i := range samples {
		s := &samples[i]
		if s.T >= from && s.T < to {
			w.rss += s.RSSMB
			w.goroutines += float64(s.Goroutines)
			w.p99 += s.P99ms
			if prev != nil {
				w.callRate += float64(s.Calls - prev.Calls)
			}
			w.n++
		}
		prev = s
	}
	if w.n > 0 {
		f := float64(w.n)
		w.rss, w.goroutines, w.p99, w.callRate = w.rss/f, w.goroutines/f, w.p99/f, w.callRate/f
	}
	return w
}

// verdict compares the first minute after the warm-up with the last one:
// memory may not grow by more than a quarter, goroutines by more than 5%
// (plus a few for timers coming and going), and calls may not fail.
func verdict(samples []Sample, warmup time.Duration, ld *load) error {
	if len(samples) == 0 {
		return fmt.Errorf("no samples")
	}
	end := samples[len(samples)-1].T
	w0 := warmup.Seconds()
	if end-w0 < 120 {
		w0 = end / 4
	}
	first := mean(samples, w0, w0+60)
	last := mean(samples, end-60, end+1)
	total := samples[len(samples)-1]
	log.Printf("first minute after warm-up: rss %.1f MB, goroutines %.0f, calls/s %.0f, p99 %.1f ms", first.rss, first.goroutines, first.callRate, first.p99)
	log.Printf("last minute:                rss %.1f MB, goroutines %.0f, calls/s %.0f, p99 %.1f ms", last.rss, last.goroutines, last.callRate, last.p99)
	log.Printf("totals: %d calls, %d casts, %d notifications sent, %d received, %d errors", total.Calls, total.Casts, total.Notifies, total.Received, total.Errors)
	var problems []string
	if first.n == 0 || last.n == 0 {
		problems = append(problems, "run too short to compare two windows")
	}
	if last.rss > first.rss*1.25 {
		problems = append(problems, fmt.Sprintf("RSS grew from %.1f to %.1f MB", first.rss, last.rss))
	}
	if last.goroutines > first.goroutines*1.05+20 {
		problems = append(problems, fmt.Sprintf("goroutines grew from %.0f to %.0f", first.goroutines, last.goroutines))
	}
	if total.Errors > 0 {
		e, _ := ld.lastErr.Load().(string)
		problems = append(problems, fmt.Sprintf("%d operations failed (last: %s)", total.Errors, e))
	}
	if total.Calls == 0 || total.Received == 0 {
		problems = append(problems, "no load went through")
	}
	if len(problems) > 0 {
		return fmt.Errorf("not flat: %v", problems)
	}
	log.Printf("flat: memory and goroutines held, no failures")
	return nil
}

// drawChart plots RSS, goroutines, and calls per second with p99 latency
// against time, one panel each.
func drawChart(path string, samples []Sample) error {
	const w, panelH, pad = 900, 200, 40
	panels := []struct {
		title  string
		series [][]float64
		colors []color.RGBA
	}{
		{"broker RSS (MB)", [][]float64{pick(samples, func(s Sample, _ *Sample) float64 { return s.RSSMB })}, []color.RGBA{{200, 40, 40, 255}}},
		{"broker goroutines", [][]float64{pick(samples, func(s Sample, _ *Sample) float64 { return float64(s.Goroutines) })}, []color.RGBA{{40, 40, 200, 255}}},
		{"calls/s (green), casts/s (blue), notifications/s (orange)", [][]float64{
			pick(samples, func(s Sample, p *Sample) float64 { return rate(s.Calls, p, func(p *Sample) int64 { return p.Calls }) }),
			pick(samples, func(s Sample, p *Sample) float64 { return rate(s.Casts, p, func(p *Sample) int64 { return p.Casts }) }),
			pick(samples, func(s Sample, p *Sample) float64 {
				return rate(s.Notifies, p, func(p *Sample) int64 { return p.Notifies })
			}),
		}, []color.RGBA{{30, 150, 30, 255}, {40, 40, 200, 255}, {230, 130, 0, 255}}},
		{"call latency p99 (ms)", [][]float64{pick(samples, func(s Sample, _ *Sample) float64 { return s.P99ms })}, []color.RGBA{{120, 0, 120, 255}}},
	}
	img := image.NewRGBA(image.Rect(0, 0, w, len(panels)*(panelH+pad)+pad))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	end := 0.0
	if len(samples) > 0 {
		end = samples[len(samples)-1].T
	}
	for i, p := range panels {
		top := pad + i*(panelH+pad)
		area := image.Rect(70, top, w-20, top+panelH)
		maxV := 0.0
		for _, s := range p.series {
			for _, v := range s {
				maxV = max(maxV, v)
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		maxV *= 1.1
		label(img, 70, top-8, p.title)
		label(img, 4, top+10, fmt.Sprintf("%.0f", maxV))
		label(img, 4, top+panelH, "0")
		rect(img, area, color.RGBA{180, 180, 180, 255})
		for k, s := range p.series {
			for j := 1; j < len(s); j++ {
				x0 := area.Min.X + (j-1)*area.Dx()/max(len(s)-1, 1)
				x1 := area.Min.X + j*area.Dx()/max(len(s)-1, 1)
				y0 := area.Max.Y - int(s[j-1]/maxV*float64(area.Dy()))
				y1 := area.Max.Y - int(s[j]/maxV*float64(area.Dy()))
				line(img, x0, y0, x1, y1, p.colors[k])
			}
		}
	}
	label(img, w-200, len(panels)*(panelH+pad)+pad-8, fmt.Sprintf("time: 0 to %.0f s", end))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func pick(samples []Sample, get func(s Sample, prev *Sample) float64) []float64 {
	out := make([]float64, len(samples))
	for i, s := range samples {
		var prev *Sample
		if i > 0 {
			prev = &samples[i-1]
		}
		out[i] = get(s, prev)
	}
	return out
}

func rate(now int64, prev *Sample, get func(*Sample) int64) float64 {
	if prev == nil {
		return 0
	}
	return float64(now - get(prev))
}

func label(img *image.RGBA, x, y int, s string) {
	d := font.Drawer{Dst: img, Src: image.Black, Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func rect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	line(img, r.Min.X, r.Min.Y, r.Max.X, r.Min.Y, c)
	line(img, r.Min.X, r.Max.Y, r.Max.X, r.Max.Y, c)
	line(img, r.Min.X, r.Min.Y, r.Min.X, r.Max.Y, c)
	line(img, r.Max.X, r.Min.Y, r.Max.X, r.Max.Y, c)
}

// line draws with Bresenham's algorithm.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
