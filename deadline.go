package sdx

import (
	"sync"
	"time"
)

// deadline is one direction's deadline as a channel that is closed when
// it passes, so a blocked Read or Write can select on it together with its
// completion. Setting it again re-arms it; any goroutine may call set
// and wait.
type deadline struct {
	mu     sync.Mutex // protects timer and expired
	timer  *time.Timer
	expire chan struct{} // closed when the deadline has passed
}

func newDeadline() deadline { return deadline{expire: make(chan struct{})} }

// set arms the deadline for t; the zero time means none, a time in the
// past expires it at once.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expire // the timer fired: wait for its close
	}
	d.timer = nil
	passed := closed(d.expire)
	if t.IsZero() {
		if passed {
			d.expire = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if passed {
			d.expire = make(chan struct{})
		}
		ch := d.expire
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !passed {
		close(d.expire)
	}
}

// wait returns a channel that is closed once the deadline has passed.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expire
}

// passed reports whether the deadline has passed.
func (d *deadline) passed() bool { return closed(d.wait()) }

// stop releases the timer.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
