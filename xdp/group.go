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

// Group waits on several queues at once, for a poller that drains them
// all. The queues' sockets go into an epoll instance of the Group's own,
// and that instance into Go's netpoller: a Wait parks the goroutine as a
// Queue's Wait does, whichever queue the next frame arrives on. Where the
// netpoller cannot take it, Wait falls back to one poll(2) on every
// socket and a wake eventfd, which holds a thread while it waits.
//
// A Group is owned by the queues' poller, which alone calls Wait and
// Close; Wake may be called from any goroutine, also after Close. The
// queues stay the caller's: Close does not close them.
type Group struct {
	qs []*Queue

	// The netpoller wait (see Queue: the same deadline and flag protocol).
	ep      *os.File // the epoll instance holding every queue's socket
	epRaw   syscall.RawConn
	epFirst bool               // the waiter's: the next epReady call is Read's first look
	epArmed atomic.Int64       // ep's read deadline in Unix ns; -1 none, 0 unknown
	epFn    func(uintptr) bool // epReady, bound once
	woken   atomic.Bool

	// The poll(2) fallback.
	pfds []unix.PollFd // the queues' sockets, then the wake eventfd
	wake *os.File

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
	g.openNetpoll()
	return g, nil
}

// openNetpoll builds the epoll instance and hands it to the netpoller; a
// failure leaves the poll(2) fallback.
func (g *Group) openNetpoll() {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	for _, q := range g.qs {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(q.fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, q.fd, &ev); err != nil {
			unix.Close(epfd)
			return
		}
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return
	}
	f := os.NewFile(uintptr(epfd), "xdp-group")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	g.ep, g.epRaw = f, rc
	g.epFn = g.epReady
}

// epReady is the netpoller's readiness callback: on its first call it
// reports whether Wait can return at once, on later ones that it can.
func (g *Group) epReady(uintptr) bool {
	if !g.epFirst {
		return true
	}
	g.epFirst = false
	if g.woken.Load() {
		return true
	}
	for _, q := range g.qs {
		if q.rx.Filled() {
			return true
		}
	}
	return false
}

// Wait blocks until one of the rx rings has frames, Wake is called, or the
// timeout passes (negative: no timeout). It reports whether Wake was
// called.
func (g *Group) Wait(timeout time.Duration) (woken bool, err error) {
	if g.ep == nil {
		return g.waitPoll(timeout)
	}
	// The deadline first, then the flag (see Queue.ArmWait and BlockWait);
	// a deadline armed before that is early enough is kept.
	now := time.Now()
	want := int64(-1)
	if timeout >= 0 {
		want = now.Add(timeout).UnixNano()
	}
	armed := g.epArmed.Load()
	if !(armed < 0 && want < 0 || armed > now.UnixNano() && (want < 0 || armed <= want)) {
		var dl time.Time
		if want >= 0 {
			dl = time.Unix(0, want)
		}
		g.ep.SetReadDeadline(dl)
		g.epArmed.Store(want)
	}
	if g.woken.Swap(false) {
		g.epArmed.Store(0)
		return true, nil
	}
	g.epFirst = true
	err = g.epRaw.Read(g.epFn)
	if g.woken.Swap(false) {
		g.epArmed.Store(0)
		return true, nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		g.epArmed.Store(0)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("xdp: wait: %w", err)
	}
	for _, q := range g.qs {
		if q.rx.Filled() {
			return false, nil
		}
	}
	// Readable with nothing to read: a socket may have failed (interface
	// gone), which only poll(2) tells.
	return g.waitPoll(0)
}

// waitPoll is Wait in poll(2). poll(2) is level-triggered, so frames that
// arrived before the call end it at once.
func (g *Group) waitPoll(timeout time.Duration) (woken bool, err error) {
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
	if g.ep != nil {
		g.woken.Store(true)
		g.ep.SetReadDeadline(aLongTimeAgo)
		return
	}
	one := [8]byte{1}
	g.wake.Write(one[:]) // a full counter already wakes the poller
}

// Close releases the epoll instance and the wake eventfd; idempotent. The
// owner must have stopped waiting.
func (g *Group) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	var errs []error
	if g.ep != nil {
		errs = append(errs, g.ep.Close())
	}
	errs = append(errs, g.wake.Close())
	return errors.Join(errs...)
}
