package xdp

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// npWait parks a goroutine in Go's netpoller until a descriptor (an
// AF_XDP socket, or an epoll instance holding several) is readable, a
// wake, or a deadline: a wait then costs no thread, as a goroutine blocked
// on a kernel socket costs none. It is how a Queue and a Group wait.
//
// One goroutine waits at a time (the owner's poller); wake may be called
// from any goroutine. A wake sets woken, then moves the read deadline to
// the past; a wait sets its deadline, then looks at woken: so a wake after
// that look ends the wait, and one before it is seen.
type npWait struct {
	f     *os.File
	raw   syscall.RawConn
	ready func() bool        // the waiter's: whether a wait can end at once
	first bool               // the waiter's: the next readable call is Read's first look
	fn    func(uintptr) bool // readable, bound once
	armed int64              // the waiter's: the read deadline in Unix ns; -1 none, 0 unknown
	woken atomic.Bool
}

// newNPWait takes fd (made non-blocking; its file status may be shared
// with other descriptors of the same file, which sdx uses only without
// blocking) into the netpoller. It closes fd when that fails.
func newNPWait(fd int, name string, ready func() bool) (*npWait, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	w := &npWait{f: f, raw: raw, ready: ready}
	w.fn = w.readable
	return w, nil
}

// readable is the netpoller's callback: on its first call it reports
// whether the wait can end at once, on later ones (the descriptor became
// readable, or the deadline moved) that it can.
func (w *npWait) readable(uintptr) bool {
	if !w.first {
		return true
	}
	w.first = false
	return w.woken.Load() || w.ready()
}

// wait blocks until the descriptor is readable, ready holds, wake is
// called (woken), or timeout passes (expired; negative: no timeout). A
// deadline armed before that is still ahead and not later than this one's
// is kept: moving a runtime timer on every wait costs more than an early
// wake-up now and then.
func (w *npWait) wait(timeout time.Duration) (woken, expired bool, err error) {
	now := time.Now()
	want := int64(-1)
	if timeout >= 0 {
		want = now.Add(timeout).UnixNano()
	}
	if !(w.armed < 0 && want < 0 || w.armed > now.UnixNano() && (want < 0 || w.armed <= want)) {
		var dl time.Time
		if want >= 0 {
			dl = time.Unix(0, want)
		}
		w.f.SetReadDeadline(dl)
		w.armed = want
	}
	if w.woken.Swap(false) {
		w.armed = 0 // the wake moved the deadline
		return true, false, nil
	}
	w.first = true
	err = w.raw.Read(w.fn)
	if w.woken.Swap(false) {
		w.armed = 0
		return true, false, nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Expired, or moved to the past by a wake whose flag an earlier
		// wait took: arm afresh next time.
		w.armed = 0
		return false, true, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("xdp: wait: %w", err)
	}
	return false, false, nil
}

// wake ends the wait in progress, or the next one; any goroutine.
func (w *npWait) wake() {
	w.woken.Store(true)
	w.f.SetReadDeadline(aLongTimeAgo)
}

func (w *npWait) close() error { return w.f.Close() }

// aLongTimeAgo is a deadline in the past, that ends a wait at once.
var aLongTimeAgo = time.Unix(1, 0)
