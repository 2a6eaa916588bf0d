package sdx

import (
	"net"
	"time"

	"github.com/sdx-project/sdx/provider"
)

// Graceful disconnect lives in the switch, as in Windows Sockets Direct:
// the provider has only Shutdown (a disconnect after the data) and
// CloseSocket (a hard close that resets the peer and discards whatever the
// peer's provider holds unread). A hard close is therefore harmless only
// once the peer's application is done with the connection, and the switch
// orders the close so that the side that learns this last resets:
//
//	first closer  (its disconnect went out before the peer's arrived):
//	              waits for the peer's disconnect, then hard-closes.
//	second closer (the peer's disconnect had arrived before its own went
//	              out): waits for the first closer's reset, then
//	              hard-closes.
//
// The common cases come out right: a full close on each side in turn (the
// first closer's data was read to io.EOF before the second closed), and a
// request/response with a half close (CloseWrite) by the requester, who
// then reads the response to io.EOF before it closes. A second closer that
// only half-closes may not have read the peer's data yet: CloseWrite first
// takes the rest of the peer's stream (its end has arrived) out of the
// provider, so the peer's reset cannot discard it. Data that arrives
// after Close, or sits unread at Close, resets the connection at once, as
// kernel TCP does.
//
// The provider tells the switch how the exchange stands (WaitEnd: the
// peer's disconnect arrived, ours was acknowledged, data arrived, the
// connection failed), so neither closer polls. One limit remains: when
// both sides half-close at the same moment, each takes itself for the first
// closer, so a reader still draining the other's data may see ECONNRESET
// instead of the last bytes.

func (c *sconn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return c.opErr("close", net.ErrClosed)
	}
	close(c.closedCh)
	c.wake()
	switch l := c.linger.Load(); {
	case l == 0:
		c.abort()
	case l > 0:
		c.disconnect(time.Now().Add(time.Duration(l) * time.Second))
	default:
		if !c.st.startBackground() {
			c.abort()
			break
		}
		go c.routineClose(time.Now().Add(c.st.cfg.CloseTimeout))
	}
	return nil
}

// routineClose is the background graceful close of a connection whose
// linger is negative.
func (c *sconn) routineClose(deadline time.Time) {
	defer c.st.bg.Done()
	c.disconnect(deadline)
}

// disconnect is the graceful close: the disconnect after the data (every
// Write has returned, so the provider holds all of it), the exchange
// described above, then the hard close. At deadline, or when the stack
// closes (it wakes rw), it resets the connection instead.
func (c *sconn) disconnect(deadline time.Time) {
	defer c.abort()
	c.wmu.lock()
	ok := c.werr == nil
	if ok && !c.wshut {
		ok = c.shutdownLocked() == nil
	}
	second := c.second
	c.wmu.unlock()
	if !ok {
		return
	}

	c.rmu.lock()
	defer c.rmu.unlock()
	if len(c.held) > 0 || c.rerr != nil {
		return // unread data (reset, as TCP does), or nothing to wait for
	}
	// The first closer waits until the peer's disconnect has arrived and
	// ours is acknowledged (the peer has everything); data that arrives
	// meanwhile resets. The second closer waits for the first one's reset.
	want := provider.End(0)
	if !second {
		want = provider.EndPeerFin | provider.EndFinAcked | provider.EndReadable
	}
	for !c.st.closed.Load() {
		end, err := c.p.WaitEnd(c.sock, want, deadline, c.rw)
		switch {
		case err == provider.ErrInterrupted:
			continue // the stack may be closing: look again
		case err != nil, end&(provider.EndFailed|provider.EndReadable) != 0:
			return
		case end&provider.EndPeerFin != 0 && end&provider.EndFinAcked != 0:
			return
		}
		// Wait for what is still missing.
		want = provider.EndReadable | (provider.EndPeerFin|provider.EndFinAcked)&^end
	}
}

// abort is the hard close: CloseSocket resets the peer, discards what is
// unsent and completes the pending operations (with "aborted") before it
// returns; then the handle is forgotten.
func (c *sconn) abort() {
	if c.released.Swap(true) {
		return
	}
	c.p.CloseSocket(c.sock)
	c.closeProbe()
	c.st.unregister(c.handle)
}
