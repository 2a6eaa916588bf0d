package sdx

import (
	"net"
	"time"
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
// Two limits come from the provider's interface (docs/SWITCH.md): a
// switch cannot learn that its disconnect was acknowledged, nor be told of
// a reset after the peer's disconnect (FD_CLOSE is posted once), so the
// second closer polls with a receive, backing off to closePoll; and when
// both sides half-close at the same moment, each takes itself for the
// first closer, so a reader still draining the other's data may see
// ECONNRESET instead of the last bytes.

// closePoll bounds the second closer's wait between two looks for the
// first closer's reset.
const closePoll = 10 * time.Millisecond

func (c *sconn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return c.opErr("close", net.ErrClosed)
	}
	close(c.closedCh)
	c.rdl.stop()
	c.wdl.stop()
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

// disconnect is the graceful close: every posted send into the provider,
// the disconnect after the data, the exchange described above, then the
// hard close. At deadline, or when the stack closes, it resets the
// connection instead.
func (c *sconn) disconnect(deadline time.Time) {
	defer c.abort()
	expire := make(chan struct{})
	timer := time.AfterFunc(time.Until(deadline), func() { close(expire) })
	defer timer.Stop()

	c.wmu.lock()
	for c.wn > 0 && c.werr == nil {
		select {
		case <-c.wdone:
			c.takeSendLocked()
		case <-expire:
			c.wmu.unlock()
			return
		case <-c.st.quit:
			c.wmu.unlock()
			return
		}
	}
	ok := c.werr == nil
	if ok && !c.wshut {
		ok = c.shutdownLocked(expire, c.st.quit) == nil
	}
	second := c.second
	c.wmu.unlock()
	if !ok {
		return
	}

	c.rmu.lock()
	defer c.rmu.unlock()
	backoff := 100 * time.Microsecond
	var pause *time.Timer
	defer func() {
		if pause != nil {
			pause.Stop()
		}
	}()
	for {
		switch {
		case c.unreadLocked():
			return // unread data: reset, as TCP does
		case c.rerr != nil:
			return // reset by the peer, or failed: nothing to wait for
		case !second && (c.reof || c.peerFIN.Load()):
			return // first closer: the exchange is complete
		}
		if !c.rposted {
			if c.reof {
				// Second closer: a receive after the end of the stream
				// completes at once; look again after a pause.
				if pause == nil {
					pause = time.NewTimer(backoff)
				} else {
					pause.Reset(backoff)
				}
				select {
				case <-pause.C:
				case <-expire:
					return
				case <-c.st.quit:
					return
				}
				backoff = min(2*backoff, closePoll)
				c.reof = false
			}
			c.postRecvLocked()
			continue
		}
		select {
		case <-c.rdone:
			c.takeRecvLocked()
		case <-expire:
			return
		case <-c.st.quit:
			return
		}
	}
}

// abort is the hard close: CloseSocket resets the peer, discards what is
// unsent and completes the posted operations (with "aborted") before it
// returns; then the handle is forgotten.
func (c *sconn) abort() {
	if c.released.Swap(true) {
		return
	}
	c.st.p.CloseSocket(c.sock)
	c.st.unregister(c.handle)
}
