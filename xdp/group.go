package xdp

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Group waits on several queues at once, for a poller that drains them
// all: one poll(2) on every queue's socket and a wake eventfd. A Queue
// alone waits in Go's netpoller instead (Queue.Wait); a Group holds a
// thread in poll(2) while it waits, which the runtime replaces for the
// other goroutines.
//
// A Group is owned by the queues' poller, which alone calls Wait and
// Close; Wake may be called from any goroutine, also after Close. The
// queues stay the caller's: Close does not close them.
type Group struct {
	qs     []*Queue
	pfds   []unix.PollFd // the queues' sockets, then the wake eventfd
	wake   *os.File
	closed atomic.Bool
}

// NewGroup returns a Group over qs.
func NewGroup(qs []*Queue) (*Group, error) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("xdp: eventfd: %w", err)
	}
	g := &Group{qs: qs, wake: os.NewFile(uintptr(efd), "xdp-group-wake")}
	for _, q := range qs {
		g.pfds = append(g.pfds, unix.PollFd{Fd: int32(q.fd), Events: unix.POLLIN})
	}
	g.pfds = append(g.pfds, unix.PollFd{Fd: int32(efd), Events: unix.POLLIN})
	return g, nil
}

// Wait blocks until one of the rx rings has frames, Wake is called, or the
// timeout passes (negative: no timeout). It reports whether Wake was
// called. poll(2) is level-triggered, so frames that arrived before the
// call end it at once.
func (g *Group) Wait(timeout time.Duration) (woken bool, err error) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	for {
		_, err := unix.Poll(g.pfds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("xdp: poll: %w", err)
		}
		break
	}
	for i, q := range g.qs {
		if g.pfds[i].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return false, &LinkError{Op: "poll", Interface: q.cfg.Interface, Err: unix.ENETDOWN}
		}
	}
	if g.pfds[len(g.qs)].Revents&unix.POLLIN != 0 {
		var buf [8]byte
		g.wake.Read(buf[:])
		return true, nil
	}
	return false, nil
}

// Wake makes a Wait in progress, or the next one, return at once; any
// goroutine, also after Close (then it does nothing).
func (g *Group) Wake() {
	if g.closed.Load() {
		return
	}
	one := [8]byte{1}
	g.wake.Write(one[:]) // a full counter already wakes the poller
}

// Close releases the wake eventfd; idempotent. The owner must have
// stopped waiting.
func (g *Group) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	return g.wake.Close()
}
