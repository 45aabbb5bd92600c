package broker

// ring is a growable FIFO of values with cheap push at both ends.
type ring[T any] struct {
	buf  []T
	head int
	n    int
}

func (r *ring[T]) Len() int { return r.n }

func (r *ring[T]) grow() { r.resize(max(16, 2*len(r.buf))) }

func (r *ring[T]) PushBack(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

func (r *ring[T]) PushFront(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1 + len(r.buf)) % len(r.buf)
	r.buf[r.head] = v
	r.n++
}

// Front returns a pointer to the first element; the ring must not be empty.
func (r *ring[T]) Front() *T { return &r.buf[r.head] }

// At returns a pointer to the i-th element.
func (r *ring[T]) At(i int) *T { return &r.buf[(r.head+i)%len(r.buf)] }

func (r *ring[T]) PopFront() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n == 0 {
		r.head = 0
		if len(r.buf) > 1024 {
			r.buf = nil
		}
	} else if len(r.buf) > 1024 && r.n < len(r.buf)/4 {
		// A drained backlog gives its slots back.
		r.resize(len(r.buf) / 2)
	}
	return v
}

func (r *ring[T]) resize(n int) {
	nb := make([]T, n)
	for i := 0; i < r.n; i++ {
		nb[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = nb, 0
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
