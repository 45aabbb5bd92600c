package broker

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// watermarkState is the memory high watermark, which may change at run
// time (SetMemoryHighWatermark, PUT /api/nodes/{node}/memory-high-watermark).
type watermarkState struct {
	// bytes is the watermark in bytes; 0 disables the alarm.
	bytes atomic.Int64
	// fraction is the share of total memory bytes was computed from, or 0
	// when it was given in bytes. While it is set, the alarm also compares
	// the process's memory (sampled once a second) with the watermark, as
	// RabbitMQ's relative watermark compares the node's memory.
	fraction atomic.Uint64 // math.Float64bits
	// process is the last sample of the process's memory, while fraction
	// is set.
	process atomic.Int64
	// sampling is set once the sampler goroutine runs.
	sampling atomic.Bool
}

// memorySampleInterval is how often the process's memory is sampled while
// a relative watermark is set (RabbitMQ samples every 2.5 s by default).
const memorySampleInterval = time.Second

// highWatermark is the current watermark in bytes (0: no alarm).
func (s *Server) highWatermark() int64 { return s.wm.bytes.Load() }

// SetMemoryHighWatermark sets the memory high watermark to bytes of counted
// memory (see Options.MemoryHighWatermark; 0 disables the alarm) while the
// broker runs. The alarm is raised or cleared at once. The change lasts
// until the broker stops, as rabbitmqctl set_vm_memory_high_watermark.
func (s *Server) SetMemoryHighWatermark(bytes int64) error {
	if bytes < 0 {
		return fmt.Errorf("broker: negative memory high watermark %d", bytes)
	}
	s.wm.fraction.Store(0)
	s.wm.bytes.Store(bytes)
	s.followGoMemoryLimit()
	s.evalAlarm(s.queuedBytes.Load())
	return nil
}

// SetMemoryHighWatermarkRelative sets the memory high watermark to fraction
// (0 to 1) of the machine's total memory, as rabbitmqctl
// set_vm_memory_high_watermark <fraction> does, and returns it in bytes.
// Besides counted memory, the alarm then compares the memory the process
// holds (the Go runtime's mapped memory less what it released to the OS,
// sampled once a second and at this call) with the watermark, as RabbitMQ
// compares its node's memory: a fraction below the broker's own footprint
// raises the alarm at once. 0 disables the alarm.
func (s *Server) SetMemoryHighWatermarkRelative(fraction float64) (int64, error) {
	if math.IsNaN(fraction) || fraction < 0 || fraction > 1 {
		return 0, fmt.Errorf("broker: memory high watermark fraction %v is not between 0 and 1", fraction)
	}
	total, err := totalMemory()
	if err != nil {
		return 0, err
	}
	bytes := int64(fraction * float64(total))
	if fraction > 0 && bytes == 0 {
		bytes = 1
	}
	s.wm.process.Store(processMemory())
	s.wm.bytes.Store(bytes)
	s.wm.fraction.Store(math.Float64bits(fraction))
	s.followGoMemoryLimit()
	s.startMemorySampler()
	s.evalAlarm(s.queuedBytes.Load())
	return bytes, nil
}

// startMemorySampler starts, once, the goroutine that samples the
// process's memory while a relative watermark is set; Shutdown stops it.
func (s *Server) startMemorySampler() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.wm.sampling.Load() {
		return
	}
	s.wm.sampling.Store(true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(memorySampleInterval)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				if s.wm.fraction.Load() != 0 {
					s.wm.process.Store(processMemory())
					s.evalAlarm(s.queuedBytes.Load())
				}
			}
		}
	}()
}

// evalAlarm raises the memory alarm when the memory in use passes the
// watermark and clears it below nine tenths of it. The memory in use is
// counted memory, or, under a relative watermark, the larger of counted
// memory and the process's memory.
func (s *Server) evalAlarm(counted int64) {
	hw := s.wm.bytes.Load()
	used := counted
	if s.wm.fraction.Load() != 0 {
		used = max(used, s.wm.process.Load())
	}
	switch {
	case hw > 0 && used > hw && !s.alarm.Load():
		s.alarmMu.Lock()
		if !s.alarm.Load() {
			s.alarm.Store(true)
			s.log.Warn("memory high watermark reached, blocking publishers", "used_bytes", used, "watermark", hw)
		}
		s.alarmMu.Unlock()
	case (hw == 0 || used < hw*9/10) && s.alarm.Load():
		s.alarmMu.Lock()
		s.alarm.Store(false)
		s.alarmCond.Broadcast()
		s.alarmMu.Unlock()
	}
}

// processMemory is the memory the Go runtime holds from the OS: what it
// mapped less what it returned.
func processMemory() int64 {
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(samples)
	var v [2]uint64
	for i, sm := range samples {
		if sm.Value.Kind() == metrics.KindUint64 {
			v[i] = sm.Value.Uint64()
		}
	}
	if v[1] > v[0] {
		return 0
	}
	return int64(v[0] - v[1])
}

// watermarkRequest is the body of PUT /api/nodes/{node}/memory-high-watermark:
// one of fraction (of total memory) or bytes.
type watermarkRequest struct {
	Fraction *float64 `json:"fraction"`
	Bytes    *int64   `json:"bytes"`
}

// WatermarkInfo is the answer of GET /api/nodes/{node}/memory-high-watermark.
type WatermarkInfo struct {
	Bytes    int64    `json:"bytes"`
	Fraction *float64 `json:"fraction,omitempty"`
	Alarm    bool     `json:"alarm"`
}

// MemoryHighWatermark reports the watermark as it is now.
func (s *Server) MemoryHighWatermark() WatermarkInfo {
	wi := WatermarkInfo{Bytes: s.wm.bytes.Load(), Alarm: s.alarm.Load()}
	if f := s.wm.fraction.Load(); f != 0 {
		fr := math.Float64frombits(f)
		wi.Fraction = &fr
	}
	return wi
}

func (a *mgmtAPI) nodeParam(m *mgmtRequest) bool {
	if m.r.PathValue("node") != a.s.NodeName() {
		writeNotFound(m.w)
		return false
	}
	return true
}

func (a *mgmtAPI) getWatermark(m *mgmtRequest) {
	if a.nodeParam(m) {
		writeJSON(m.w, http.StatusOK, a.s.MemoryHighWatermark())
	}
}

// putWatermark is oslogo's extension (RabbitMQ has no HTTP endpoint for
// it): the runtime setter behind `oslogo ctl set_vm_memory_high_watermark`.
func (a *mgmtAPI) putWatermark(m *mgmtRequest) {
	if !a.nodeParam(m) {
		return
	}
	var req watermarkRequest
	if !m.readBody(a.s, &req) {
		return
	}
	var err error
	switch {
	case (req.Fraction == nil) == (req.Bytes == nil):
		err = errors.New(`give one of "fraction" or "bytes"`)
	case req.Fraction != nil:
		_, err = a.s.SetMemoryHighWatermarkRelative(*req.Fraction)
	default:
		err = a.s.SetMemoryHighWatermark(*req.Bytes)
	}
	if err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}
