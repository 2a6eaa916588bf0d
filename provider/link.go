package provider

import (
	"net/netip"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
)

// Link carries sdx datagrams (the UDP payload: sdx header + data) between
// this host and peers. It is owned by the poller; only Wake may be called
// from other goroutines.
//
// The poller role moves between goroutines (see Provider), so the owner
// is not always the same goroutine, but its calls never overlap and each
// hand-over is ordered by an atomic operation: a Link must not depend on
// being called from one particular goroutine or OS thread.
type Link interface {
	LocalAddr() netip.Addr // IPv4 address this host sends from
	MTU() int              // largest datagram (sdx header + data) one frame carries
	// Send queues one datagram to peer (copied; payload may be reused on return).
	// Errors: ENOBUFS (out of tx frames/slots: retry after Flush/poll), ENETDOWN, EHOSTUNREACH.
	Send(peer netip.Addr, payload []byte) error
	Flush() error // push queued sends to the wire; ENETDOWN when the link is down
	// Receive calls fn for up to max received datagrams without blocking and returns how many;
	// payload is valid only during fn. A datagram the link holds in several
	// buffers (a multi-buffer frame) comes in pieces, in order: payload,
	// which holds at least the sdx header, then more; more is nil otherwise.
	Receive(max int, fn func(peer netip.Addr, payload []byte, more [][]byte)) int
	// SetUnreachable sets the function Receive calls, instead of fn, for
	// an ICMP port unreachable from peer's host about a datagram we sent
	// it: quoted is as much of that datagram as the ICMP carries (from
	// the start of the sdx header; possibly cut short), valid only during
	// the call. The link has checked that the quoted datagram went from
	// this host's address and sdx port to peer's; the engine checks the rest.
	SetUnreachable(fn func(peer netip.Addr, quoted []byte))
	Wait(timeout time.Duration) error // block until input may be ready, Wake, or timeout
	Wake()                            // any goroutine
	Close() error
}

// ECNLink is a Link that carries the ECN field of the IPv4 header
// (RFC 3168), so the engine can run ECN on connections whose peer takes
// part (wire.FlagECN). A Link without it gets no ECN: its frames go out
// Not-ECT and are dropped, not marked, at a full queue. The XDPLink and
// memnet's Link are ECNLinks.
type ECNLink interface {
	Link
	// SendECT is Send for a datagram marked ECN-capable, ECT(0): a
	// queue that would drop it for congestion may mark it CE instead.
	SendECT(peer netip.Addr, payload []byte) error
	// ReceivedCE reports whether the datagram Receive hands to its fn
	// arrived marked CE. It is called only from inside that fn.
	ReceivedCE() bool
}

// lender is a Link that lends the engine memory it can send from in
// place: the XDPLink's lent UMEM frames. The engine keeps its first
// buffers there, so a segment goes out, and out again, from where the
// writer's data was copied to, with no copy into a frame.
type lender interface {
	// lent returns the memory in regions of per buffers, one region per
	// queue the link sends on: buffer r*per+j's datagram at
	// regions[r][j*stride+head:], up to MTU bytes, with room for the
	// link's headers in the head bytes before it.
	lent() (regions [][]byte, per, stride, head int)
	// region is the region whose buffers the frames of the connection
	// from local port lport to peer's port rport go out from in place:
	// where its send data belongs, for now (a flow may change queues).
	region(peer netip.Addr, lport, rport uint16) int
	// sendLent is Send for the n-byte datagram in lent buffer i, in
	// place. It returns errNotInPlace, having done nothing, when the
	// frame must go out where the buffer is not (another queue): send a
	// copy then. After a nil return the link sends from the buffer
	// until it calls the function set with setLentDone. ect marks the
	// frame ECT(0) (see ECNLink).
	sendLent(peer netip.Addr, i uint32, n int, ect bool) error
	setLentDone(fn func(i uint32))
	// reap takes back what the kernel has sent, calling that function.
	reap()
}

// DefaultUDPPort is the UDP port sdx frames go to unless the link is
// configured otherwise. All sdx traffic on a link uses this one port;
// stream ports live in the sdx header.
const DefaultUDPPort = wire.DefaultUDPPort
