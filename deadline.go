package sdx

import (
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/provider"
)

// deadline is one direction's deadline: the time, and the Waiter of the
// direct verb that direction blocks in, so a new deadline reaches a call
// already waiting. Any goroutine may call set and get.
type deadline struct {
	at atomic.Int64 // Unix nanoseconds; 0: none
	w  *provider.Waiter
}

// set arms the deadline for t; the zero time means none, a time in the
// past expires it at once. A blocked call looks at it again.
func (d *deadline) set(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = max(t.UnixNano(), 1)
	}
	d.at.Store(ns)
	d.w.Wake()
}

// get returns the deadline (zero: none) and whether it has passed.
func (d *deadline) get() (time.Time, bool) {
	ns := d.at.Load()
	if ns == 0 {
		return time.Time{}, false
	}
	t := time.Unix(0, ns)
	return t, !time.Now().Before(t)
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
