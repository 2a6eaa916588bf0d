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
// Not-ECT and are dropped, not marked, at a full queue. The AF_XDP link
// (xdplink.Link) and memnet's Link are ECNLinks.
type ECNLink interface {
	Link
	// SendECT is Send for a datagram marked ECN-capable, ECT(0): a
	// queue that would drop it for congestion may mark it CE instead.
	SendECT(peer netip.Addr, payload []byte) error
	// ReceivedCE reports whether the datagram Receive hands to its fn
	// arrived marked CE. It is called only from inside that fn.
	ReceivedCE() bool
}

// Lender is a Link that lends the engine memory it can send from in
// place, as the AF_XDP link (package xdplink) lends UMEM frames. The
// engine keeps its first buffers there, so a segment goes out, and out
// again, from where the writer's data was copied to, with no copy into a
// frame. Its methods are the poller's, as the Link's are.
//
// What the engine may assume: Lent answers the same each time, and its
// memory stays the link's, mapped where it is, until Close. A buffer is
// the engine's to write until a SendLent of it returns held; from then on
// the link sends from it and the engine neither writes nor reuses it,
// until the link hands it back by calling the function set with
// SetLentDone, once for that send, from inside one of its own methods
// (Flush, Reap or a send). A buffer not held is the engine's again when
// SendLent returns. A closed link hands nothing back: the engine takes
// every buffer back itself.
type Lender interface {
	Link
	// Lent returns the memory in regions of per buffers, one region per
	// queue the link sends on: buffer r*per+j's datagram at
	// regions[r][j*stride+head:], up to MTU bytes, with room for the
	// link's headers in the head bytes before it. No regions: the link
	// lends nothing.
	Lent() (regions [][]byte, per, stride, head int)
	// Region is the region whose buffers the frames of the connection
	// from local port lport to peer's port rport go out from in place:
	// where its send data belongs, for now (a flow may change queues).
	Region(peer netip.Addr, lport, rport uint16) int
	// SendLent is Send for the n-byte datagram in lent buffer i. The
	// link picks the queue the frame goes out on, once: if that is the
	// buffer's region it sends from the buffer in place and returns
	// held; otherwise it sends a copy, as Send does. ect marks the frame
	// ECT(0) (see ECNLink). Its errors are Send's; a buffer is never
	// held after an error.
	SendLent(peer netip.Addr, i uint32, n int, ect bool) (held bool, err error)
	// SetLentDone sets the function the link calls when it no longer
	// sends from a buffer it held.
	SetLentDone(fn func(i uint32))
	// Reap takes back what the kernel has sent, calling that function.
	Reap()
}

// Holder is a Link that can keep a received datagram where it arrived,
// as the AF_XDP link keeps its UMEM frames: in-order data that waits for
// its reader then stays there and is copied once, into the reader's
// slice, not first into a buffer of the pool. The link bounds what it
// holds (HoldCap) so that holding never takes the buffers it receives
// into: a reader that never reads costs the others nothing but the copy.
// Its methods are the poller's, as the Link's are.
type Holder interface {
	Link
	// Hold, called from inside Receive's fn, keeps the buffers of the
	// datagram fn was handed: payload and each of more stay valid, and
	// are not reused, until each is given back with Release. It appends
	// one handle per piece to hs, payload's first, and returns it; or
	// hs unchanged, holding nothing, when HoldCap buffers are held.
	Hold(hs []uint32) []uint32
	// Data is the piece handle h stands for, as fn was handed it; valid
	// until h is released.
	Data(h uint32) []byte
	// Release gives back one buffer Hold kept. Every held buffer must be
	// given back before Close.
	Release(h uint32)
	// HoldCap is the most buffers the link holds at once.
	HoldCap() int
}

// DefaultUDPPort is the UDP port sdx frames go to unless the link is
// configured otherwise. All sdx traffic on a link uses this one port;
// stream ports live in the sdx header.
const DefaultUDPPort = wire.DefaultUDPPort
