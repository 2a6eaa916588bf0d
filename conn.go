package sdx

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/provider"
)

// Path says which way a connection's bytes travel.
type Path string

const (
	PathSDX Path = "sdx" // the SAN provider over AF_XDP
	PathTCP Path = "tcp" // kernel TCP: the peer does not speak sdx, or is not on an sdx subnet
)

// Conn is a stream connection made by Dialer or accepted by Listener: a
// net.Conn over sdx or, after a fallback, over kernel TCP. Path says which.
// All methods may be called from any goroutine; Read and Write may run
// concurrently.
type Conn struct {
	tcp *net.TCPConn // PathTCP
	s   *sconn       // PathSDX
	why Fallback     // PathTCP: why; FallbackNone for PathSDX
	ts  *Stack       // PathTCP: the stack that lists it (sdx stat conns); nil if none
}

var _ net.Conn = (*Conn)(nil)

// Path returns PathSDX or PathTCP.
func (c *Conn) Path() Path {
	if c.s != nil {
		return PathSDX
	}
	return PathTCP
}

// Fallback returns why the connection went over kernel TCP, or
// FallbackNone for a PathSDX connection.
func (c *Conn) Fallback() Fallback { return c.why }

// Read reads data from the connection. After the peer's graceful close it
// returns io.EOF once every byte before it was read; after the peer's hard
// close an error matching syscall.ECONNRESET.
func (c *Conn) Read(b []byte) (int, error) {
	if c.s != nil {
		return c.s.Read(b)
	}
	return c.tcp.Read(b)
}

// Write writes data to the connection. It returns once the data is in the
// send buffers; what it could not place before a deadline or Close is not
// sent, and the count says how much was.
func (c *Conn) Write(b []byte) (int, error) {
	if c.s != nil {
		return c.s.Write(b)
	}
	return c.tcp.Write(b)
}

// Close closes the connection as SetLinger says: by default it returns at
// once and the graceful disconnect (all written data, then the peer's
// io.EOF) completes in the background. Blocked Read and Write calls
// return net.ErrClosed.
func (c *Conn) Close() error {
	if c.s != nil {
		return c.s.Close()
	}
	if c.ts != nil {
		c.ts.untrackTCP(c)
	}
	return c.tcp.Close()
}

// CloseWrite shuts down the writing side: the peer reads io.EOF after the
// data already written. Reading continues. Over sdx it first waits (up to
// the write deadline) until the provider has taken every byte written.
func (c *Conn) CloseWrite() error {
	if c.s != nil {
		return c.s.CloseWrite()
	}
	return c.tcp.CloseWrite()
}

// SetLinger sets what Close does with data not yet delivered, as
// net.TCPConn.SetLinger:
//
//	sec < 0  (default) Close returns at once; the data is sent and the
//	         disconnect exchanged in the background, for at most the
//	         stack's CloseTimeout, after which the connection is reset.
//	sec == 0 Close discards unsent data and resets the connection at once:
//	         the peer's reads fail with ECONNRESET.
//	sec > 0  Close blocks until the disconnect is exchanged, for at most
//	         sec seconds; then it resets the connection.
func (c *Conn) SetLinger(sec int) error {
	if c.s != nil {
		return c.s.SetLinger(sec)
	}
	return c.tcp.SetLinger(sec)
}

// LocalAddr returns the local address, a *net.TCPAddr on either path.
func (c *Conn) LocalAddr() net.Addr {
	if c.s != nil {
		return c.s.laddr
	}
	return c.tcp.LocalAddr()
}

// RemoteAddr returns the peer's address, a *net.TCPAddr on either path.
func (c *Conn) RemoteAddr() net.Addr {
	if c.s != nil {
		return c.s.raddr
	}
	return c.tcp.RemoteAddr()
}

// SetDeadline sets the read and write deadlines. A Read or Write that
// times out returns an error wrapping os.ErrDeadlineExceeded; no data is
// lost: bytes that arrive after a read deadline are returned by the next
// Read.
func (c *Conn) SetDeadline(t time.Time) error {
	if c.s != nil {
		return c.s.SetDeadline(t)
	}
	return c.tcp.SetDeadline(t)
}

// SetReadDeadline sets the deadline of Read calls, now and future.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.s != nil {
		return c.s.SetReadDeadline(t)
	}
	return c.tcp.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline of Write calls, now and future.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.s != nil {
		return c.s.SetWriteDeadline(t)
	}
	return c.tcp.SetWriteDeadline(t)
}

// TCPConn returns the kernel connection of a PathTCP Conn, nil for
// PathSDX.
func (c *Conn) TCPConn() *net.TCPConn { return c.tcp }

// chanMutex is a mutex whose waiters can give up: a Read or Write that
// finds the connection closing does not wait for the closer, which may
// hold the lock for as long as the disconnect takes.
type chanMutex chan struct{}

func newChanMutex() chanMutex { return make(chanMutex, 1) }

func (m chanMutex) lock()   { m <- struct{}{} }
func (m chanMutex) unlock() { <-m }

// tryLock takes the lock if it is free.
func (m chanMutex) tryLock() bool {
	select {
	case m <- struct{}{}:
		return true
	default:
		return false
	}
}

// lockUnless takes the lock, or reports false once done is closed. A
// free lock is taken without the two-way select, which cost every Read
// and Write about 40 ns more; the callers look at closing after.
func (m chanMutex) lockUnless(done <-chan struct{}) bool {
	if m.tryLock() {
		return true
	}
	select {
	case m <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

// result is the outcome of a connect, written by the poller before cdone
// is signalled.
type result struct {
	n   int
	err error
}

// sconn is a connection over the provider.
//
// Data moves through the provider's direct verbs: Read receives straight
// into the caller's slice and Write sends straight from it, each copying
// once, between the caller's memory and the provider's buffers. The
// goroutine blocked in Read or Write takes the poller role while it waits
// when the role is free, so a request-response exchange runs without a
// hand-off between goroutines. A Waiter per direction lets Close and the
// deadline setters make a blocked call look again; nothing is lost when
// it does (the provider withdraws the receive, or reports how much of a
// send it took).
//
// Ownership: the read side (held, reof, rerr) belongs to the goroutine
// holding rmu, the write side (werr, wshut, second) to the one holding
// wmu; a closer takes wmu, then rmu (lock order). The poller writes only
// cres (before it signals cdone) and the atomic peerFIN.
type sconn struct {
	st     *Stack
	shard  int // of st.shards: its provider is p
	p      *provider.Provider
	sock   provider.Socket
	handle uint64
	laddr  *net.TCPAddr
	raddr  *net.TCPAddr

	// Lifecycle.
	closing  atomic.Bool   // Close was called
	closedCh chan struct{} // closed by Close: lock waiters give up
	linger   atomic.Int64  // seconds; negative: graceful in the background
	peerFIN  atomic.Bool   // the peer's disconnect arrived
	released atomic.Bool   // CloseSocket was called

	// Connect (dial side only).
	cres  result
	cdone chan struct{}

	// Read side.
	rmu  chanMutex
	rw   *provider.Waiter
	rdl  deadline
	held []byte // the rest of the peer's stream, taken out by a drain
	reof bool
	rerr error

	// Write side.
	wmu   chanMutex
	ww    *provider.Waiter
	wdl   deadline
	werr  error
	wshut bool // Shutdown was called
	// second: the peer's disconnect had arrived before ours went out, so
	// the peer closes the connection, not us (see disconnect).
	second bool

	// The stand-in descriptor of SyscallConn, made at its first call
	// (syscallconn.go); probeMu protects the pointer.
	probeMu sync.Mutex
	probe   *probe
}

func newSConn(sh *stackShard, sock provider.Socket) *sconn {
	st := sh.st
	c := &sconn{
		st:       st,
		shard:    sh.i,
		p:        sh.p,
		sock:     sock,
		closedCh: make(chan struct{}),
		cdone:    make(chan struct{}, 1),
		rmu:      newChanMutex(),
		wmu:      newChanMutex(),
		rw:       sh.p.NewWaiter(),
		ww:       sh.p.NewWaiter(),
	}
	c.rdl.w, c.wdl.w = c.rw, c.ww
	c.linger.Store(-1)
	c.handle = st.register(c)
	return c
}

// start makes an established connection ready: the peer's disconnect is
// noted as it arrives.
func (c *sconn) start(local, peer netip.AddrPort) error {
	c.laddr = net.TCPAddrFromAddrPort(local)
	c.raddr = net.TCPAddrFromAddrPort(peer)
	return c.p.EventSelect(c.sock, provider.FDClose, c.onEvent)
}

func (c *sconn) ctx(tag uint64) uint64 {
	return c.handle<<ctxShift | uint64(c.shard)<<shardShift | tag
}

// complete runs on the poller: the connect's completion.
func (c *sconn) complete(cp provider.Completion) {
	if cp.Verb == provider.VerbConnect {
		c.cres = result{cp.Bytes, cp.Err}
		c.cdone <- struct{}{}
	}
}

// wake makes blocked Read and Write calls look at the connection again.
func (c *sconn) wake() {
	c.rw.Wake()
	c.ww.Wake()
	c.probeMu.Lock()
	if c.probe != nil {
		c.probe.w.Wake()
	}
	c.probeMu.Unlock()
}

// onEvent is the EventSelect callback; it runs on the poller.
func (c *sconn) onEvent(_ provider.Socket, ev provider.Event, err error) {
	if ev&provider.FDClose != 0 && err == nil {
		c.peerFIN.Store(true)
	}
}

func (c *sconn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// connErr turns a provider error into the error a Read or Write returns.
func (c *sconn) connErr(err error) error {
	switch {
	case c.closing.Load() && (isAborted(err) || errors.Is(err, syscall.ENOTSOCK)):
		return net.ErrClosed
	case c.st.closed.Load() && (isAborted(err) || errors.Is(err, syscall.ENOTSOCK) || errors.Is(err, syscall.ENETDOWN)):
		return ErrStackClosed
	}
	return err
}

// ---- read side --------------------------------------------------------

func (c *sconn) Read(b []byte) (int, error) {
	if !c.rmu.lockUnless(c.closedCh) {
		return 0, c.opErr("read", net.ErrClosed)
	}
	defer c.rmu.unlock()
	if len(b) == 0 && !c.closing.Load() {
		return 0, nil
	}
	for {
		switch {
		case c.closing.Load():
			return 0, c.opErr("read", net.ErrClosed)
		case len(c.held) > 0:
			n := copy(b, c.held)
			c.held = c.held[n:]
			return n, nil
		case c.reof:
			return 0, io.EOF
		case c.rerr != nil:
			return 0, c.opErr("read", c.rerr)
		}
		dl, passed := c.rdl.get()
		if passed {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		n, err := c.p.RecvWait(c.sock, b, dl, c.rw)
		switch {
		case err == nil && n > 0:
			return n, nil
		case err == nil:
			c.reof = true
			c.peerFIN.Store(true)
		case err == provider.ErrInterrupted || errors.Is(err, os.ErrDeadlineExceeded):
			// Look again: closing, or a deadline moved or passed.
		default:
			c.rerr = c.connErr(err)
		}
	}
}

// drainLocked takes what remains of the peer's stream, whose end has
// arrived, out of the provider into the switch (held), so the peer's hard
// close, which our disconnect will bring, cannot discard it. The peer's
// disconnect follows all its data, so what remains is at most the
// provider's receive buffer. The caller holds wmu; drainLocked takes rmu.
func (c *sconn) drainLocked(expire time.Time) error {
	if !c.rmu.lockUnless(c.closedCh) {
		return net.ErrClosed
	}
	defer c.rmu.unlock()
	var buf [4096]byte
	for !c.reof && c.rerr == nil {
		if c.closing.Load() {
			return net.ErrClosed
		}
		n, err := c.p.RecvWait(c.sock, buf[:], expire, c.rw)
		switch {
		case err == nil && n > 0:
			c.held = append(c.held, buf[:n]...)
		case err == nil:
			c.reof = true
		case err == provider.ErrInterrupted:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if !expire.IsZero() && !time.Now().Before(expire) {
				return os.ErrDeadlineExceeded
			}
		default:
			c.rerr = c.connErr(err)
		}
	}
	return nil
}

// ---- write side -------------------------------------------------------

func (c *sconn) Write(b []byte) (int, error) {
	if !c.wmu.lockUnless(c.closedCh) {
		return 0, c.opErr("write", net.ErrClosed)
	}
	defer c.wmu.unlock()
	n := 0
	for {
		switch {
		case c.closing.Load():
			return n, c.opErr("write", net.ErrClosed)
		case c.werr != nil:
			return n, c.opErr("write", c.werr)
		case c.wshut:
			return n, c.opErr("write", syscall.EPIPE)
		case n == len(b):
			return n, nil
		}
		dl, passed := c.wdl.get()
		if passed {
			return n, c.opErr("write", os.ErrDeadlineExceeded)
		}
		k, err := c.p.SendWait(c.sock, b[n:], dl, c.ww)
		n += k
		switch {
		case err == nil, err == provider.ErrInterrupted, errors.Is(err, os.ErrDeadlineExceeded):
		default:
			c.werr = c.connErr(err)
		}
	}
}

func (c *sconn) CloseWrite() error {
	if !c.wmu.lockUnless(c.closedCh) {
		return c.opErr("close", net.ErrClosed)
	}
	defer c.wmu.unlock()
	if c.closing.Load() {
		return c.opErr("close", net.ErrClosed)
	}
	if c.wshut {
		return nil
	}
	if c.werr != nil {
		return c.opErr("close", c.werr)
	}
	dl, _ := c.wdl.get()
	if c.peerFIN.Load() {
		// We close second: the peer resets once our disconnect arrives.
		if err := c.drainLocked(dl); err != nil {
			return c.opErr("close", err)
		}
	}
	if err := c.shutdownLocked(); err != nil {
		return c.opErr("close", c.connErr(err))
	}
	return nil
}

// shutdownLocked sends the disconnect after the data, noting whether the
// peer's came first. The provider takes it at once, also while the send
// ring is full (it follows the data as soon as a slot frees).
func (c *sconn) shutdownLocked() error {
	c.second = c.peerFIN.Load()
	err := c.p.Shutdown(c.sock)
	if err == nil {
		c.wshut = true
	}
	return err
}

// ---- deadlines and options --------------------------------------------

func (c *sconn) SetDeadline(t time.Time) error {
	if c.closing.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *sconn) SetReadDeadline(t time.Time) error {
	if c.closing.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rdl.set(t)
	return nil
}

func (c *sconn) SetWriteDeadline(t time.Time) error {
	if c.closing.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.wdl.set(t)
	return nil
}

func (c *sconn) SetLinger(sec int) error {
	if c.closing.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	if sec < 0 {
		sec = -1
	}
	c.linger.Store(int64(sec))
	return nil
}
