package sdx

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
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
}

var _ net.Conn = (*Conn)(nil)

// Path returns PathSDX or PathTCP.
func (c *Conn) Path() Path {
	if c.s != nil {
		return PathSDX
	}
	return PathTCP
}

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

// lockUnless takes the lock, or reports false once done is closed.
func (m chanMutex) lockUnless(done <-chan struct{}) bool {
	select {
	case m <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

// result is the outcome of one posted operation, written by the poller
// before the waiting side is signalled.
type result struct {
	n   int
	err error
}

// sconn is a connection over the provider.
//
// Ownership: the read side (rbuf, roff, rend, rposted, reof, rerr) belongs
// to the goroutine holding rmu, the write side (wbuf, whead, wn, werr,
// wshut, second) to the one holding wmu; a closer takes wmu, then rmu
// (lock order), never both with a provider call that waits for the
// network. The poller writes only rres, wres and cres, before it signals
// rdone, wdone and cdone, and the atomic peerFIN.
//
// At most one receive is posted at any time, into rbuf; it stays posted
// across a read deadline and its data is returned by the next Read. Sends
// are staged in sendSlots slices of wbuf, posted in order.
type sconn struct {
	st     *Stack
	sock   provider.Socket
	handle uint64
	laddr  *net.TCPAddr
	raddr  *net.TCPAddr

	// Lifecycle.
	closing  atomic.Bool   // Close was called
	closedCh chan struct{} // closed by Close: blocked Read and Write return
	linger   atomic.Int64  // seconds; negative: graceful in the background
	peerFIN  atomic.Bool   // the peer's disconnect arrived
	released atomic.Bool   // CloseSocket was called

	// Connect (dial side only).
	cres  result
	cdone chan struct{}

	// Read side.
	rmu     chanMutex
	rbuf    []byte
	roff    int
	rend    int
	rposted bool
	rspare  []byte // the posted receive's buffer when rbuf is busy (drain)
	held    []byte // received after rbuf's data, not yet read (drain)
	reof    bool
	rerr    error
	rres    result
	rdone   chan struct{} // cap 1
	rdl     deadline

	// Write side.
	wmu   chanMutex
	wbuf  [sendSlots][]byte
	wres  [sendSlots]result
	whead int // oldest posted slot
	wn    int // slots posted
	werr  error
	wshut bool // Shutdown was called
	// second: the peer's disconnect had arrived before ours went out, so
	// the peer closes the connection, not us (see disconnect).
	second bool
	wdone  chan struct{} // cap sendSlots
	wdl    deadline
}

func newSConn(st *Stack, sock provider.Socket) *sconn {
	c := &sconn{
		st:       st,
		sock:     sock,
		closedCh: make(chan struct{}),
		cdone:    make(chan struct{}, 1),
		rbuf:     make([]byte, st.cfg.ReadBuffer),
		rdone:    make(chan struct{}, 1),
		wdone:    make(chan struct{}, sendSlots),
		rdl:      newDeadline(),
		wdl:      newDeadline(),
		rmu:      newChanMutex(),
		wmu:      newChanMutex(),
	}
	c.linger.Store(-1)
	w := make([]byte, st.cfg.WriteBuffer)
	n := len(w) / sendSlots
	for i := range c.wbuf {
		c.wbuf[i] = w[i*n : (i+1)*n : (i+1)*n]
	}
	c.handle = st.register(c)
	return c
}

// start makes an established connection ready: its events and its first
// receive, so data moves into the switch before the first Read.
func (c *sconn) start(local, peer netip.AddrPort) error {
	c.laddr = net.TCPAddrFromAddrPort(local)
	c.raddr = net.TCPAddrFromAddrPort(peer)
	if err := c.st.p.EventSelect(c.sock, provider.FDClose, c.onEvent); err != nil {
		return err
	}
	c.rmu.lock()
	c.postRecvLocked()
	err := c.rerr
	c.rmu.unlock()
	return err
}

func (c *sconn) ctx(tag uint64) uint64 { return c.handle<<ctxShift | tag }

// complete runs on the poller.
func (c *sconn) complete(cp provider.Completion) {
	r := result{cp.Bytes, cp.Err}
	switch cp.Verb {
	case provider.VerbRecv:
		c.rres = r
		c.rdone <- struct{}{}
	case provider.VerbSend:
		c.wres[cp.Context&(1<<ctxShift-1)-tagSend] = r
		c.wdone <- struct{}{}
	case provider.VerbConnect:
		c.cres = r
		c.cdone <- struct{}{}
	}
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
	if c.closing.Load() {
		return 0, c.opErr("read", net.ErrClosed)
	}
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if c.rdl.passed() {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		if c.roff < c.rend {
			n := copy(b, c.rbuf[c.roff:c.rend])
			c.roff += n
			if c.roff == c.rend {
				c.postRecvLocked() // an error waits for the next Read
			}
			return n, nil
		}
		if len(c.held) > 0 {
			n := copy(b, c.held)
			c.held = c.held[n:]
			return n, nil
		}
		if c.reof {
			return 0, io.EOF
		}
		if c.rerr != nil {
			return 0, c.opErr("read", c.rerr)
		}
		if !c.rposted {
			c.postRecvLocked()
			continue
		}
		select {
		case <-c.rdone:
			c.takeRecvLocked()
		case <-c.rdl.wait():
			// The receive stays posted; its data goes to the next Read.
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		case <-c.closedCh:
			return 0, c.opErr("read", net.ErrClosed)
		}
	}
}

// postRecvLocked posts the connection's one receive: into rbuf when it is
// empty, else (only while draining) into a spare buffer.
func (c *sconn) postRecvLocked() {
	if c.rposted || c.reof || c.rerr != nil {
		return
	}
	buf := c.rbuf
	c.rspare = nil
	if c.roff < c.rend || len(c.held) > 0 {
		c.rspare = make([]byte, len(c.rbuf))
		buf = c.rspare
	} else {
		c.roff, c.rend = 0, 0
	}
	if err := c.st.p.PostRecv(c.sock, buf, c.st.cq, c.ctx(tagRecv)); err != nil {
		c.rerr = c.connErr(err)
		return
	}
	c.rposted = true
}

// takeRecvLocked takes the completed receive's result; rdone was
// received.
func (c *sconn) takeRecvLocked() {
	c.rposted = false
	r := c.rres
	switch {
	case r.err != nil:
		c.rerr = c.connErr(r.err)
	case r.n == 0:
		c.reof = true
		c.peerFIN.Store(true)
	case c.rspare != nil:
		c.held = append(c.held, c.rspare[:r.n]...)
	default:
		c.roff, c.rend = 0, r.n
	}
	c.rspare = nil
}

// unreadLocked reports whether received data waits to be read.
func (c *sconn) unreadLocked() bool { return c.roff < c.rend || len(c.held) > 0 }

// drainLocked takes what remains of the peer's stream, whose end has
// arrived, out of the provider into the switch (held), so the peer's hard
// close, which our disconnect will bring, cannot discard it. The peer's
// disconnect follows all its data, so what remains is at most the
// provider's receive buffer. The caller holds wmu; drainLocked takes rmu.
func (c *sconn) drainLocked(expire, closed <-chan struct{}) error {
	if !c.rmu.lockUnless(closed) {
		return net.ErrClosed
	}
	defer c.rmu.unlock()
	for !c.reof && c.rerr == nil {
		if !c.rposted {
			c.postRecvLocked()
			continue
		}
		select {
		case <-c.rdone:
			c.takeRecvLocked()
		case <-expire:
			return os.ErrDeadlineExceeded
		case <-closed:
			return net.ErrClosed
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
	if c.closing.Load() {
		return 0, c.opErr("write", net.ErrClosed)
	}
	if c.wdl.passed() {
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	}
	c.reapSendsLocked()
	n := 0
	for {
		if c.werr != nil {
			return n, c.opErr("write", c.werr)
		}
		if c.wshut {
			return n, c.opErr("write", syscall.EPIPE)
		}
		if n == len(b) {
			return n, nil
		}
		if c.wn == sendSlots {
			if err := c.waitSendLocked(c.wdl.wait()); err != nil {
				return n, c.opErr("write", err)
			}
			continue
		}
		slot := (c.whead + c.wn) % sendSlots
		k := copy(c.wbuf[slot], b[n:])
		if err := c.st.p.PostSend(c.sock, c.wbuf[slot][:k], c.st.cq, c.ctx(tagSend+uint64(slot))); err != nil {
			c.werr = c.connErr(err)
			continue
		}
		c.wn++
		n += k
	}
}

// waitSendLocked waits for the oldest posted send; it returns the reason
// it stopped waiting (deadline, Close), or nil once a slot is free (a
// send's error lands in werr).
func (c *sconn) waitSendLocked(expire <-chan struct{}) error {
	select {
	case <-c.wdone:
		c.takeSendLocked()
		return nil
	case <-expire:
		return os.ErrDeadlineExceeded
	case <-c.closedCh:
		return net.ErrClosed
	}
}

// reapSendsLocked takes the sends that have completed, without waiting,
// so a failure shows at the next Write.
func (c *sconn) reapSendsLocked() {
	for c.wn > 0 {
		select {
		case <-c.wdone:
			c.takeSendLocked()
		default:
			return
		}
	}
}

// takeSendLocked takes the oldest send's result (sends complete in the
// order posted); wdone was received.
func (c *sconn) takeSendLocked() {
	r := c.wres[c.whead]
	c.whead = (c.whead + 1) % sendSlots
	c.wn--
	if r.err != nil && c.werr == nil {
		c.werr = c.connErr(r.err)
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
	for c.wn > 0 {
		if err := c.waitSendLocked(c.wdl.wait()); err != nil {
			return c.opErr("close", err)
		}
	}
	if c.werr != nil {
		return c.opErr("close", c.werr)
	}
	if c.peerFIN.Load() {
		// We close second: the peer resets once our disconnect arrives.
		if err := c.drainLocked(c.wdl.wait(), c.closedCh); err != nil {
			return c.opErr("close", err)
		}
	}
	if err := c.shutdownLocked(c.wdl.wait(), c.closedCh); err != nil {
		return c.opErr("close", c.connErr(err))
	}
	return nil
}

// shutdownLocked sends the disconnect after the data, noting whether the
// peer's came first. Every posted send has completed. The provider refuses
// a disconnect with ENOBUFS while the connection's send ring is full (many
// small sends in flight); it is tried again, backing off, until it is
// taken or expire or closed says to give up.
func (c *sconn) shutdownLocked(expire, closed <-chan struct{}) error {
	c.second = c.peerFIN.Load()
	backoff := 50 * time.Microsecond
	var pause *time.Timer
	defer func() {
		if pause != nil {
			pause.Stop()
		}
	}()
	for {
		err := c.st.p.Shutdown(c.sock)
		if !errors.Is(err, syscall.ENOBUFS) {
			if err == nil {
				c.wshut = true
			}
			return err
		}
		if pause == nil {
			pause = time.NewTimer(backoff)
		} else {
			pause.Reset(backoff)
		}
		select {
		case <-pause.C:
		case <-expire:
			return os.ErrDeadlineExceeded
		case <-closed:
			return net.ErrClosed
		}
		backoff = min(2*backoff, 5*time.Millisecond)
	}
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
