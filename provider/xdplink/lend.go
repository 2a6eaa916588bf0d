package xdplink

import (
	"net/netip"
	"syscall"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/wire"
)

// Lent, Region, SendLent, SetLentDone and Reap make the link a
// provider.Lender: each queue's UMEM lends lentPer buffers, lentFrames
// UMEM frames each, and buffer i lives in queue i/lentPer's UMEM.

// Lent returns the lent memory: one region per queue, of per buffers
// stride bytes apart, each datagram head bytes into its stride, after
// room for the Ethernet, IPv4 and UDP headers. No regions: the link
// lends nothing (Config.LendBuffers negative).
func (l *Link) Lent() (regions [][]byte, per, stride, head int) {
	if l.lentPer == 0 {
		return nil, 0, 0, 0
	}
	for _, lq := range l.qs {
		regions = append(regions, lq.q.Lent())
	}
	return regions, l.lentPer, l.lentStride(), frame.HeaderLen
}

func (l *Link) lentStride() int { return l.lentFrames * l.qs[0].q.FrameSize() }

// Region returns the region whose buffers the frames of the connection
// from local port lport to peer's port rport go out from in place, as
// things stand: the index of the queue its frames go out on.
func (l *Link) Region(peer netip.Addr, lport, rport uint16) int {
	if len(l.qs) == 1 {
		return 0
	}
	k, h := flowFor(peer, lport, rport)
	return l.txQueue(k, h).idx
}

// SetLentDone sets the function the link calls, from inside its own
// methods, when it no longer sends from a lent buffer SendLent held.
func (l *Link) SetLentDone(fn func(i uint32)) { l.lentFn = fn }

// Reap takes back the lent buffers the kernel has sent, calling the
// function set with SetLentDone. It also sends what waits to go out, so
// that frames held back while the interface was down leave, and give
// their buffers back, once it is up, whether or not the provider has
// more to send.
func (l *Link) Reap() {
	for _, lq := range l.qs {
		if lq.ntx > 0 || lq.q.TxPending() > 0 {
			lq.flush()
		}
	}
}

// SendLent is Send for the n-byte datagram in lent buffer i. The frame
// goes out from the buffer in place when the queue its flow goes out on
// is the buffer's (held: the link sends from the buffer until it calls
// the SetLentDone function), else as a copy, as Send's would (counted
// in Copied); ect marks it ECT(0).
func (l *Link) SendLent(peer netip.Addr, i uint32, n int, ect bool) (held bool, err error) {
	if n > l.mtu {
		return false, syscall.EMSGSIZE
	}
	ecn := frame.NotECT
	if ect {
		ecn = frame.ECT0
	}
	lq := l.lentQueue(i)
	off := l.lentOff(lq, i)
	return l.send(peer, lq.q.Lent()[off+frame.HeaderLen:off+frame.HeaderLen+n], i, ecn)
}

// lentQueue is the queue in whose UMEM lent buffer i lives.
func (l *Link) lentQueue(i uint32) *linkQueue { return l.qs[int(i)/l.lentPer] }

// lentOff is the offset of lent buffer i in its queue's lent memory.
func (l *Link) lentOff(lq *linkQueue, i uint32) int {
	return (int(i) - lq.idx*l.lentPer) * l.lentStride()
}

// sendInPlace queues the frame of the n-byte datagram in lent buffer i,
// on lq, the buffer's own queue, with its headers written in front.
func (l *Link) sendInPlace(lq *linkQueue, peer netip.Addr, mac [6]byte, h uint32, i uint32, n int, ecn uint8) error {
	q := lq.q
	off := l.lentOff(lq, i)
	b := q.Lent()[off : off+frame.HeaderLen+n]
	nf := (len(b) + q.FrameSize() - 1) / q.FrameSize()
	if lq.ntx+nf > len(lq.txq) {
		if err := l.txRoom(lq, nf); err != nil {
			return err
		}
	}
	l.encode(b, peer, mac, h, n, ecn)
	q.LentPacket(lq.txq[lq.ntx:lq.ntx], off, len(b))
	if t := l.tap.Load(); t != nil {
		t.record(true, b)
	}
	l.lentOut[i] = uint8(nf)
	lq.ntx += nf
	lq.tx.add(uint64(nf))
	l.ctr.inPlace.bump() // counted in Sent too (Counters): one atomic store less per frame
	return nil
}

// lentSent is a queue's report of a frame of lent buffer i sent: the
// buffer goes back to the provider with its last frame.
func (l *Link) lentSent(i uint32) {
	if l.lentOut[i]--; l.lentOut[i] == 0 && l.lentFn != nil {
		l.lentFn(i)
	}
}

// DefaultLendBuffers is how many buffers a link lends when
// Config.LendBuffers is zero: the provider's default pool at a link MTU
// of mtu (provider.Config.Buffers): 8192 buffers, within 32 MiB, and at
// least one connection's default send and receive buffers twice over.
func DefaultLendBuffers(mtu int) int {
	const (
		buffers  = 8192
		pool     = 32 << 20
		sendRecv = 256<<10 + 256<<10
	)
	return max(min(buffers, pool/mtu), 2*(sendRecv/(mtu-wire.HeaderLen)+4))
}
