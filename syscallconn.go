package sdx

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/provider"
)

// SyscallConn returns a raw connection, for the health checks connection
// pools make before they reuse an idle connection (a non-blocking read of
// one byte, or recv with MSG_PEEK, through RawConn.Read). On the TCP path
// it is the kernel socket's own (net.TCPConn.SyscallConn). On the sdx path
// the connection has no descriptor of its own, so RawConn hands its
// callbacks one that reads as the connection's kernel socket would at
// that moment:
//
//   - would block (EAGAIN) while the connection is alive with nothing to
//     read;
//   - readable (one byte) when received data waits;
//   - end of file (0) once it is over: reset, timed out, its peer's
//     stack gone or restarted, the peer's end of stream reached, or
//     closed.
//
// The byte is a marker, never stream data: a check takes nothing from the
// stream, and the next Read returns the data. The descriptor is one end
// of a Unix socket pair that the switch sets just before each callback,
// from the provider's view of the connection, and only then: its state
// is true as the callback starts, not kept up to date between calls, so
// poll(2) or epoll on it tells nothing. Writes through RawConn.Write or on
// the descriptor never reach the peer. The pair is made at the first
// SyscallConn call and closed with the connection: two descriptors per
// connection that asks, none for one that does not. See docs/SWITCH.md.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if c.s != nil {
		return c.s.rawConn()
	}
	return c.tcp.SyscallConn()
}

var _ syscall.Conn = (*Conn)(nil)

// probeWait bounds how long a health check waits for the peer's stack to
// answer before it reports a connection alive that nothing says is dead.
const probeWait = 5 * time.Millisecond

// probe is an sdx connection's stand-in descriptor (see SyscallConn).
type probe struct {
	c      *sconn
	w      *provider.Waiter // wakes a RawConn.Read that waits for readability
	waitMu sync.Mutex       // one RawConn.Read waits at a time
	mu     sync.Mutex       // protects pair and closed
	// pair is nil until the first SyscallConn, and after close.
	pair   *sys.ProbePair
	closed bool
}

// rawConn returns the connection's RawConn, making its socket pair the
// first time.
func (c *sconn) rawConn() (syscall.RawConn, error) {
	c.probeMu.Lock()
	defer c.probeMu.Unlock()
	if c.closing.Load() {
		return nil, c.opErr("raw-conn", net.ErrClosed)
	}
	if c.probe == nil {
		pair, err := sys.NewProbePair()
		if err != nil {
			return nil, c.opErr("raw-conn", err)
		}
		c.probe = &probe{c: c, w: c.p.NewWaiter(), pair: pair}
	}
	return c.probe, nil
}

// closeProbe closes the socket pair, if any: at the hard close, after
// which the connection's descriptor is gone, as a closed socket's is.
func (c *sconn) closeProbe() {
	c.probeMu.Lock()
	p := c.probe
	c.probeMu.Unlock()
	if p == nil {
		return
	}
	p.w.Wake()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.pair.Close()
		p.pair = nil
	}
}

// state is what a read of the connection's kernel socket would find now.
func (p *probe) state() sys.ProbeState {
	c := p.c
	if c.closing.Load() {
		return sys.ProbeDead
	}
	// The switch's own side first, when no Read holds it.
	if c.rmu.tryLock() {
		held, eof, rerr := len(c.held) > 0, c.reof, c.rerr
		c.rmu.unlock()
		switch {
		case held:
			return sys.ProbeReadable
		case eof || rerr != nil:
			return sys.ProbeDead
		}
	}
	// Then the provider's, with a check of the peer's stack: unless it
	// was heard from in the last 2ms, it is asked, and a restarted or
	// vanished peer fails the connection with its first answer. A live
	// one answers in a round trip; a silent one is given probeWait.
	end, err := c.p.WaitEnd(c.sock, provider.EndReadable|provider.EndPeerFin|provider.EndPeerChecked, time.Now().Add(probeWait), nil)
	switch {
	case err == nil && end&provider.EndReadable != 0:
		return sys.ProbeReadable
	case err == nil && end&(provider.EndFailed|provider.EndPeerFin) != 0:
		return sys.ProbeDead
	case err == nil, errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, provider.ErrAlready):
		// Alive with nothing to read; or the close's own wait is
		// pending, and the next look finds the connection closing.
		return sys.ProbeIdle
	}
	return sys.ProbeDead // not a connection any more (ENOTSOCK, ENOTCONN)
}

// Control calls f with the stand-in descriptor.
func (p *probe) Control(f func(fd uintptr)) error { return p.withFd("raw-control", f) }

// withFd calls f with the stand-in descriptor unless the probe is
// closed; op names the call in the error.
func (p *probe) withFd(op string, f func(fd uintptr)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return p.c.opErr(op, net.ErrClosed)
	}
	f(uintptr(p.pair.Fd()))
	return nil
}

// Read sets the stand-in descriptor to the connection's state and calls
// f with it; while f returns false, it waits until data arrives or the
// connection ends, and calls f again.
func (p *probe) Read(f func(fd uintptr) bool) error {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return p.c.opErr("raw-read", net.ErrClosed)
		}
		st := p.state()
		if err := p.pair.Set(st); err != nil {
			p.mu.Unlock()
			return p.c.opErr("raw-read", err)
		}
		done := f(uintptr(p.pair.Fd()))
		p.mu.Unlock()
		if done || st != sys.ProbeIdle {
			// A dead or readable descriptor does not change by waiting.
			return nil
		}
		// Waits are one at a time (the provider keeps one per socket);
		// Close wakes this one (sconn.wake) before its own begins.
		p.waitMu.Lock()
		_, err := p.c.p.WaitEnd(p.c.sock, provider.EndReadable|provider.EndPeerFin, time.Time{}, p.w)
		p.waitMu.Unlock()
		if errors.Is(err, provider.ErrAlready) {
			return p.c.opErr("raw-read", net.ErrClosed) // only the close waits besides us
		}
		// Anything else: the next look says where the connection stands.
	}
}

// Write calls f with the stand-in descriptor: nothing written there
// reaches the peer.
func (p *probe) Write(f func(fd uintptr) bool) error {
	return p.withFd("raw-write", func(fd uintptr) { f(fd) })
}
