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

	ep   *npWait // the netpoller wait on an epoll instance of every queue's socket
	epfd int     // that instance

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
	if g.ep, err = newNPWait(epfd, "xdp-group", g.filled); err != nil {
		return
	}
	// The queues stop and start its watch as they send and wait (see
	// Queue.watch).
	g.epfd = epfd
	for _, q := range g.qs {
		q.addWatcher(epfd)
	}
}

// filled reports whether any queue's rx ring holds frames.
func (g *Group) filled() bool {
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
	for _, q := range g.qs {
		q.watch(true)
	}
	woken, expired, err := g.ep.wait(timeout)
	if woken || expired || err != nil || g.filled() {
		return woken, err
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
		g.ep.wake()
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
		for _, q := range g.qs {
			q.dropWatcher(g.epfd)
		}
		errs = append(errs, g.ep.close())
	}
	errs = append(errs, g.wake.Close())
	return errors.Join(errs...)
}
