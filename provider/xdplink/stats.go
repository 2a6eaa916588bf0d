package xdplink

import (
	"net"
	"sync/atomic"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/xdp"
)

// Counters are the link's own counts of frames, by fate.
type Counters struct {
	Sent, Received uint64
	NotOurs        uint64 // frames on the queue not addressed to this host's sdx port
	Malformed      uint64 // frames whose headers did not parse
	Unresolved     uint64 // sends dropped because the peer's address did not resolve in time
	// Pending counts frames that waited for their peer's address to
	// resolve (sent later, or dropped as Unresolved).
	Pending  uint64
	NoFrames uint64 // sends refused with ENOBUFS for want of a UMEM frame or tx slot
	// InPlace counts frames sent from the provider's buffer in lent UMEM
	// frames; Copied, frames of such a buffer copied into a frame of
	// another queue instead, the one their flow goes out on (it moved
	// since the data was written, or its queue's share was used up), or
	// into a frame that waits for its peer to resolve.
	InPlace, Copied uint64
	// Spoofed counts frames from a source nobody may answer (the
	// subnet's network or broadcast address, 0.0.0.0/8, loopback,
	// multicast and above, the interface's own addresses), dropped; Refused, sends to such an address, refused
	// with EHOSTUNREACH; Unreach, ICMP port unreachables about our frames,
	// handed to the provider.
	Spoofed, Refused, Unreach uint64
	// Held is how many frames the provider holds now, keeping received
	// data for its reader (see Hold), over the queues.
	Held uint64
	// Forwarded counts frames of another shard's flows handed to that
	// shard (see NewShards); ForwardDropped, those its full inbox
	// refused.
	Forwarded, ForwardDropped uint64
}

// counter is a count the poller alone writes and any goroutine reads:
// bumped with a load and a store, no locked add on the data path.
type counter struct{ atomic.Uint64 }

func (c *counter) bump()        { c.Store(c.Load() + 1) }
func (c *counter) add(n uint64) { c.Store(c.Load() + n) }

// counters are Counters as the poller keeps them; sent leaves out the
// frames sent in place, which inPlace counts.
type counters struct {
	sent, received, notOurs, malformed, unresolved, pending, noFrames counter
	inPlace, copied, spoofed, refused, unreach                        counter
	forwarded, forwardDropped                                         counter
}

// Counters returns the link's counters; any goroutine.
func (l *Link) Counters() Counters {
	c := &l.ctr
	return Counters{
		Sent: c.sent.Load() + c.inPlace.Load(), Received: c.received.Load(), NotOurs: c.notOurs.Load(), Malformed: c.malformed.Load(),
		Unresolved: c.unresolved.Load(), Pending: c.pending.Load(), NoFrames: c.noFrames.Load(),
		InPlace: c.inPlace.Load(), Copied: c.copied.Load(),
		Spoofed: c.spoofed.Load(), Refused: c.refused.Load(), Unreach: c.unreach.Load(),
		Held: l.held.Load(), Forwarded: c.forwarded.Load(), ForwardDropped: c.forwardDropped.Load(),
	}
}

// Stats is what a link reports about how XDP is attached and about its
// AF_XDP sockets.
type Stats struct {
	MTU int // the largest datagram the link carries (Link.MTU)
	// XDPMode is native or generic. XDPFrags says whether the steering
	// program is frags-aware. XDPFallback says why XDP is not
	// frags-aware native mode (the refusals, or generic forced by
	// configuration); empty when it is.
	XDPMode     bpf.Mode
	XDPFrags    bool
	XDPFallback string
	FrameSize   int // UMEM frame size
	// MultiBuffer says whether frames longer than one UMEM frame travel
	// as multi-buffer packets (XDP_USE_SG and a frags-aware program),
	// so that MTU is the interface's less the IPv4 and UDP headers.
	// MultiBufferFallback says why not where the interface's MTU needs
	// them (MTU is then capped to one UMEM frame); empty otherwise.
	MultiBuffer         bool
	MultiBufferFallback string
	// Kernel is the AF_XDP sockets' XDP_STATISTICS, summed over the
	// queues: RxDropped counts frames the kernel dropped before an rx
	// ring, for instance frames longer than a UMEM frame holds.
	Kernel xdp.KernelStats
	// Queues reports each AF_XDP queue the link serves, in the order of
	// Config.Queues.
	Queues []QueueStats
}

// QueueStats is what a link reports about one of its AF_XDP queues.
type QueueStats struct {
	ID              int      // the interface's queue id
	Mode            xdp.Mode // copy or zero-copy, as the kernel granted
	ZeroCopyRefused string   // why the driver refused zero-copy (copy mode); empty if it did not
	// ModeReport says how the queue moves frames and why, as
	// xdp.Queue.ModeReport does.
	ModeReport         string
	RxFrames, TxFrames uint64 // frames taken from its rx ring, built for its tx ring
	Kernel             xdp.KernelStats
}

// Stats reports how XDP is attached and each AF_XDP socket's counters,
// and in Kernel their sum; any goroutine, also after Close (then the
// kernel's counters are zero).
func (l *Link) Stats() Stats {
	s := l.info
	l.qmu.Lock()
	defer l.qmu.Unlock()
	s.Queues = make([]QueueStats, len(l.qs))
	for i, lq := range l.qs {
		qs := QueueStats{ID: lq.id, Mode: lq.q.Mode(), ModeReport: lq.report, RxFrames: lq.rx.Load(), TxFrames: lq.tx.Load()}
		if err := lq.q.ZeroCopyErr(); err != nil {
			qs.ZeroCopyRefused = err.Error()
		}
		if !l.closed {
			qs.Kernel, _ = lq.q.KernelStats()
		}
		s.Queues[i] = qs
		s.Kernel = s.Kernel.Add(qs.Kernel)
	}
	return s
}

// SteerStats returns the steer program's counters; any goroutine. After
// Close it returns net.ErrClosed.
func (l *Link) SteerStats() (bpf.SteerStats, error) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.closed {
		return bpf.SteerStats{}, net.ErrClosed
	}
	return l.steer.Stats()
}
