package broker

import (
	"runtime/debug"
	"sync"
)

// goMemoryHeadroom is what Options.GoMemoryLimit leaves above the high
// watermark for garbage, the runtime and the little memory the broker does
// not count. Counted memory is nearly all of the live heap, so this keeps
// RSS under the watermark plus 64 MiB (docs/BROKER.md, "Memory": slow
// consumer, 256 MiB watermark, peaks 317-328 MB; with 1.5 times the
// watermark plus 64 MiB, 433-452 MB; with 40 MiB of headroom the collector
// ran 425 times a minute instead of 89).
const goMemoryHeadroom = 48 << 20

// goMemLimit is the Go runtime's soft memory limit while the broker sets
// it (Options.GoMemoryLimit).
type goMemLimit struct {
	mu   sync.Mutex
	on   bool
	prev int64 // the limit before Start, restored by Shutdown
}

func (s *Server) startGoMemoryLimit() {
	if !s.opts.GoMemoryLimit {
		return
	}
	s.gml.mu.Lock()
	s.gml.prev = debug.SetMemoryLimit(-1)
	s.gml.on = true
	s.gml.mu.Unlock()
	s.followGoMemoryLimit()
}

// followGoMemoryLimit sets the limit for the current watermark (after a
// change at run time too); without a watermark the previous limit holds.
func (s *Server) followGoMemoryLimit() {
	s.gml.mu.Lock()
	defer s.gml.mu.Unlock()
	if !s.gml.on {
		return
	}
	if hw := s.highWatermark(); hw > 0 {
		debug.SetMemoryLimit(hw + goMemoryHeadroom)
	} else {
		debug.SetMemoryLimit(s.gml.prev)
	}
}

func (s *Server) stopGoMemoryLimit() {
	s.gml.mu.Lock()
	defer s.gml.mu.Unlock()
	if s.gml.on {
		debug.SetMemoryLimit(s.gml.prev)
		s.gml.on = false
	}
}
