package broker

import (
	"math/rand/v2"
	"testing"
	"unsafe"
)

// The block ring behaves as a slice used as a double-ended queue.
func TestRingMatchesSlice(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var r ring[int]
	var model []int
	next := 0
	for step := 0; step < 200000; step++ {
		switch op := rnd.IntN(10); {
		case op < 4:
			r.PushBack(next)
			model = append(model, next)
			next++
		case op < 5:
			r.PushFront(next)
			model = append([]int{next}, model...)
			next++
		case op < 8 && len(model) > 0:
			if v := r.PopFront(); v != model[0] {
				t.Fatalf("step %d: PopFront %d, want %d", step, v, model[0])
			}
			model = model[1:]
		case op < 9 && len(model) > 0:
			i := rnd.IntN(len(model))
			if v := r.RemoveAt(i); v != model[i] {
				t.Fatalf("step %d: RemoveAt(%d) %d, want %d", step, i, v, model[i])
			}
			model = append(model[:i:i], model[i+1:]...)
		case len(model) > 0:
			i := rnd.IntN(len(model))
			if v := *r.At(i); v != model[i] {
				t.Fatalf("step %d: At(%d) %d, want %d", step, i, v, model[i])
			}
		}
		if r.Len() != len(model) {
			t.Fatalf("step %d: Len %d, want %d", step, r.Len(), len(model))
		}
		if len(model) > 0 && *r.Front() != model[0] {
			t.Fatalf("step %d: Front %d, want %d", step, *r.Front(), model[0])
		}
		if step%50000 == 0 {
			// Drain now and then, so the empty-ring paths run too.
			for r.Len() > 0 {
				if v := r.PopFront(); v != model[0] {
					t.Fatalf("drain: %d, want %d", v, model[0])
				}
				model = model[1:]
			}
		}
	}
	// The blocks held follow the values held, not the largest size reached.
	for i := 0; i < 100000; i++ {
		r.PushBack(i)
	}
	for r.Len() > 10 {
		r.PopFront()
	}
	if len(r.blocks) > 2 {
		t.Errorf("%d blocks for %d values", len(r.blocks), r.Len())
	}
}

// A ring block of queue entries or of unacknowledged-delivery records is
// exactly one of the allocator's size classes (4 KiB and 6 KiB), so the
// counted cost of an index entry (pageIndexCost) is what it takes.
func TestRingBlocksFillSizeClasses(t *testing.T) {
	for _, c := range []struct {
		name string
		size uintptr
	}{
		{"qentry", unsafe.Sizeof([ringBlock]qentry{})},
		{"unackedRec", unsafe.Sizeof([ringBlock]unackedRec{})},
	} {
		if c.size != 4096 && c.size != 6144 && c.size != 8192 {
			t.Errorf("a block of %d %s takes %d bytes, not a 4, 6 or 8 KiB size class", ringBlock, c.name, c.size)
		}
	}
	if pageIndexCost < int64(unsafe.Sizeof(qentry{})) {
		t.Errorf("pageIndexCost %d below the entry's %d bytes", pageIndexCost, unsafe.Sizeof(qentry{}))
	}
}
