package broker

// ringBlock is the number of values in one block of a ring: 64 queue
// entries of 64 bytes fill a 4 KiB allocation, 64 unacknowledged-delivery
// records of 96 bytes a 6 KiB one, so a block wastes nothing to the
// allocator's size classes (TestRingBlocksFillSizeClasses).
const ringBlock = 64

// ring is a FIFO of values with cheap push at both ends, kept in blocks of
// ringBlock values. It grows and shrinks a block at a time: a queue index of
// millions of entries never doubles and copies itself (a doubling ring held
// its old and new arrays at once, three times the index, when it grew), and
// a drained backlog gives its blocks back as it drains.
type ring[T any] struct {
	blocks []*[ringBlock]T
	head   int // position of the first value in blocks[0]
	n      int
}

func (r *ring[T]) Len() int { return r.n }

func (r *ring[T]) PushBack(v T) {
	end := r.head + r.n
	if end == len(r.blocks)*ringBlock {
		r.blocks = append(r.blocks, new([ringBlock]T))
	}
	r.blocks[end/ringBlock][end%ringBlock] = v
	r.n++
}

func (r *ring[T]) PushFront(v T) {
	if r.head == 0 {
		if r.n == 0 && len(r.blocks) > 0 {
			// An empty ring keeps one block: start it from the end.
			r.head = ringBlock
		} else {
			r.blocks = append(r.blocks, nil)
			copy(r.blocks[1:], r.blocks)
			r.blocks[0] = new([ringBlock]T)
			r.head = ringBlock
		}
	}
	r.head--
	r.blocks[0][r.head] = v
	r.n++
}

// Front returns a pointer to the first element; the ring must not be empty.
func (r *ring[T]) Front() *T { return &r.blocks[0][r.head] }

// At returns a pointer to the i-th element.
func (r *ring[T]) At(i int) *T {
	p := r.head + i
	return &r.blocks[p/ringBlock][p%ringBlock]
}

func (r *ring[T]) PopFront() T {
	var zero T
	b := r.blocks[0]
	v := b[r.head]
	b[r.head] = zero
	r.head++
	r.n--
	switch {
	case r.n == 0:
		// Keep one block for the next values.
		r.head = 0
		clear(r.blocks[1:])
		r.blocks = r.blocks[:1]
	case r.head == ringBlock:
		r.blocks[0] = nil
		r.blocks = r.blocks[1:]
		r.head = 0
		if cap(r.blocks) > 64 && len(r.blocks) < cap(r.blocks)/4 {
			// The block list of a drained backlog shrinks too.
			r.blocks = append([]*[ringBlock]T(nil), r.blocks...)
		}
	}
	return v
}

// RemoveAt deletes the i-th element, keeping order.
func (r *ring[T]) RemoveAt(i int) T {
	v := *r.At(i)
	for j := i; j > 0; j-- {
		*r.At(j) = *r.At(j - 1)
	}
	r.PopFront()
	return v
}

func (r *ring[T]) Clear() { *r = ring[T]{} }
