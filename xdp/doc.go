// Package xdp is sdx's AF_XDP layer: a Queue is one AF_XDP socket bound to
// an (interface, queue) pair inside a network namespace, with its UMEM, its
// fill, completion, rx and tx rings, and a frame pool that knows where every
// frame is; a Steering is the steer program attached to an interface
// through a bpf_link, sending sdx frames to registered queues.
//
// # Ownership
//
// A Queue has one owner, the poller goroutine: it alone touches the rings
// and the pool. Wake (stop a poller blocked in poll(2), through an eventfd
// in the poll set) may be called from any goroutine. Close runs in the owner
// after the poller has stopped, in this order: drain completions and
// receives, reclaim what the kernel's rings held (closing an AF_XDP socket
// returns nothing by itself), check the accounting, unmap the rings, close
// the socket. The UMEM is Go memory, page-aligned: it stays valid for
// whoever still holds a slice of it, and goes with the last one.
//
// # Frames
//
// Every UMEM frame of the pool is in exactly one Place: free, fill, rx,
// held, tx or completion. Pool.Check verifies that the places add up to
// the total and that the free stack holds exactly the free frames. Built
// with -tags sdxdebug, every move also checks the frame's current place
// and panics on a frame in two places.
//
// Config.LentFrames adds frames after the pool's that the pool never
// hands out: the owner keeps its own data there (sdx's provider, its
// buffer pool) and transmits it in place (Lent, LentPacket). Such frames
// are the owner's to account for; the queue counts those on the tx ring
// or in the kernel (TxPending) and reports each one sent to the function
// set with SetLentDone, not to the pool.
//
// # What is taken from asavie/xdp, and what is not
//
// asavie/xdp (v0.3.3) shows how to drive AF_XDP from Go, and this package
// follows its set-up sequence. Its hot path is not sound for sdx, so this
// package owns the socket and its rings, built on package ring:
//
//   - ring indices shared with the kernel are loaded and stored with plain
//     reads and writes there; here with sync/atomic (acquire/release);
//   - its Transmit panics on any sendto error other than EAGAIN/EBUSY, so an
//     interface going down kills the process; here ENETDOWN and a vanished
//     interface (ENXIO) become a *LinkError, EBUSY (a frame the driver
//     dropped) is counted, and the kernel's 32-frame send budget is honoured
//     by kicking again;
//   - its GetDescs walks the whole frame table to find free frames, past
//     every frame parked on the fill ring; here a free stack is O(1);
//   - it has no need_wakeup, so it kicks on every Transmit; here the socket
//     is bound with XDP_USE_NEED_WAKEUP and the kernel is kicked only when
//     it asks;
//   - it cannot open a socket inside another network namespace.
//
// BenchmarkLoop runs the same transmit/receive loop through both over one
// veth pair. On veth (copy mode) the kernel's copy dominates: both move a
// 64-byte frame in about 1.4 µs, so the gain here is soundness, not speed.
//
// # Facts of AF_XDP on veth
//
// The kernel writes a received frame XDPPacketHeadroom (256) bytes into
// its UMEM frame, in copy and in zero-copy mode, and drops a frame longer
// than the rest (KernelStats.RxDropped) unless the socket takes
// multi-buffer packets: a 2048-byte frame receives Ethernet frames of at
// most 1792 bytes. So FrameSize defaults to 4096 when the interface's MTU
// is above MaxMTU2048 (1778).
//
// Where the MTU allows longer frames, a queue binds with XDP_USE_SG
// (Linux 6.6) and a frame travels as a chain of UMEM frames, each
// descriptor but the last marked PktContd (AllocPacket, WritePacket and
// ReadPacket build and read one); Receive and Transmit move whole chains.
// veth needs a frags-aware XDP program for such frames (AttachSteer loads
// one). Where the kernel refuses multi-buffer, the queue keeps to one UMEM
// frame per packet and MultiBufferErr says why; a user of such a Queue
// sizes what it sends to the peer's RxFrameLen. In zero-copy mode a
// driver may take fewer descriptors per packet than copy mode's
// MaxPacketFrames (its xdp_zc_max_segs); sdx does not query it.
//
// veth offers copy mode only; its XDP is native. The kernel sends at most 32
// frames per sendto(2). veth's receive ring holds 256 frames: a sender that
// runs further ahead of the receiver sees frames dropped (EBUSY, counted in
// Stats.TxDropped). A namespace lives on while a socket in it is open, so
// removing the handle of a namespace sdx uses changes nothing until the
// queues close; removing the peer's namespace takes the veth pair with it.
package xdp
