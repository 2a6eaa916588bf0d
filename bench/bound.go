package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStopped is returned by a call whose Bound is done: the run reached its
// deadline, finished, or was interrupted.
var ErrStopped = errors.New("bench: run stopped")

// Bound ends a run: a deadline, and a stop flag any goroutine may set.
// Spinning loops look at the flag; calls that block somewhere the flag
// cannot reach register a hook with OnStop that unblocks them.
type Bound struct {
	deadline time.Time
	stop     atomic.Bool

	mu     sync.Mutex // protects the fields below
	hooks  map[int]func()
	nhook  int
	timer  *time.Timer
	unctx  func() bool
	halted bool // Stop has run the hooks
}

// NewBound returns a Bound that is done after d, or once ctx is done, or
// once Stop is called. Call Stop when the run ends.
func NewBound(ctx context.Context, d time.Duration) *Bound {
	b := &Bound{deadline: time.Now().Add(d)}
	b.mu.Lock()
	b.timer = time.AfterFunc(d, b.Stop)
	b.unctx = context.AfterFunc(ctx, b.Stop)
	b.mu.Unlock()
	return b
}

// Stop makes the Bound done and runs the hooks. Any goroutine may call it,
// more than once.
func (b *Bound) Stop() {
	b.stop.Store(true)
	b.mu.Lock()
	if b.halted {
		b.mu.Unlock()
		return
	}
	b.halted = true
	hooks := b.hooks
	b.hooks = nil
	if b.timer != nil {
		b.timer.Stop()
	}
	if b.unctx != nil {
		b.unctx()
	}
	b.mu.Unlock()
	for _, fn := range hooks {
		fn()
	}
}

// OnStop registers fn to run once when the Bound stops (at once if it
// already has); cancel unregisters it.
func (b *Bound) OnStop(fn func()) (cancel func()) {
	b.mu.Lock()
	if b.halted {
		b.mu.Unlock()
		fn()
		return func() {}
	}
	if b.hooks == nil {
		b.hooks = make(map[int]func())
	}
	id := b.nhook
	b.nhook++
	b.hooks[id] = fn
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.hooks, id)
		b.mu.Unlock()
	}
}

// Deadline returns the time the Bound ends by itself.
func (b *Bound) Deadline() time.Time { return b.deadline }

// Stopped reports whether the Bound has stopped (Stop, the context, or the
// deadline's timer); it does not look at the clock.
func (b *Bound) Stopped() bool { return b.stop.Load() }

// Done reports whether the Bound has ended.
func (b *Bound) Done() bool {
	return b.stop.Load() || time.Now().After(b.deadline)
}

// spinner paces the bound checks of a spinning loop: one look at the
// clock every spinCheck empty polls.
type spinner struct {
	n uint32
}

const spinCheck = 64

// wait is called after each empty poll; it returns ErrStopped once b is
// done, or ErrTimeout once until has passed.
func (s *spinner) wait(b *Bound, until time.Time) error {
	s.n++
	if s.n%spinCheck != 0 {
		return nil
	}
	if b.stop.Load() {
		return ErrStopped
	}
	now := time.Now()
	if now.After(b.deadline) {
		return ErrStopped
	}
	if now.After(until) {
		return ErrTimeout
	}
	return nil
}
