package xdp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/bpf"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/ring"
)

// Queue is an AF_XDP socket bound to one (interface, queue), with its UMEM,
// its four rings and a frame pool.
//
// A Queue is owned by one goroutine, the poller: it alone calls Refill,
// Receive, Transmit, Kick, Complete, Wait and Close, and it alone touches the
// rings and the pool. Wake and Mode may be called from any goroutine.
type Queue struct {
	cfg   Config
	fd    int
	umem  []byte
	pool  *Pool
	mode  Mode
	zcErr error // why the zero-copy bind was refused; nil if granted or not tried
	sg    bool  // bound with XDP_USE_SG: a packet may span several frames
	sgErr error // why multi-buffer was refused where the MTU needs it
	ifMTU int   // the interface's MTU at Open
	shift uint  // log2(FrameSize)

	// The rings shared with the kernel. For fill and tx only we update the
	// producer and only the kernel the consumer; for rx and completion the
	// other way round.
	fillMap, compMap, rxMap, txMap mapping
	fill, tx                       ring.Prod
	comp, rx                       ring.Cons
	fillAddrs, compAddrs           []uint64
	rxDescs, txDescs               []Desc

	// Waiting: in Go's netpoller on an epoll instance of the socket (np),
	// or, where the netpoller cannot take it, in poll(2) on the socket and
	// the wake eventfd.
	np *npWait
	// watchers are the epoll instances watching the socket: np's, and
	// a Group's; watching, whether they watch it now (see watch).
	watchers []int
	watching bool
	wake     *os.File
	pfds     [2]unix.PollFd

	// Lent frames (Config.LentFrames): how many are on the tx ring or in
	// the kernel, and whom to tell when one comes back.
	lentTx   int
	lentDone func(frame uint32)

	closed atomic.Bool
	stats  Stats
}

// Stats are the queue's own counters. Only the owner updates them.
type Stats struct {
	RxFrames    uint64 // frames taken from the rx ring
	TxFrames    uint64 // frames put on the tx ring
	Completed   uint64 // frames returned on the completion ring
	Kicks       uint64 // sendto calls that asked the kernel to transmit
	KickRetries uint64 // kicks the kernel answered with ENOBUFS (no memory for the copy)
	TxDropped   uint64 // frames the driver dropped on transmit (sendto said EBUSY)
	RxWakeups   uint64 // recvfrom calls made because the fill ring needed a wakeup
	TxRingFull  uint64 // Transmit calls that found the tx ring full
	FillEmpty   uint64 // Refill calls that found no free frame
}

// Open opens an AF_XDP socket on cfg.Interface queue cfg.Queue inside
// cfg.Netns and fills its fill ring.
func Open(cfg Config) (_ *Queue, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q := &Queue{cfg: cfg, fd: -1, pool: newPool(cfg.NumFrames)}
	defer func() {
		if err != nil {
			q.release()
		}
	}()
	var ifindex int
	err = sys.InNetns(cfg.Netns, func() error {
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return fmt.Errorf("xdp: interface %q: %w", cfg.Interface, err)
		}
		ifindex, q.ifMTU = ifi.Index, ifi.MTU
		if q.cfg.FrameSize == 0 {
			q.cfg.FrameSize = FrameSizeFor(ifi.MTU)
		}
		q.fd, err = unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.EAFNOSUPPORT) {
				return &bpf.KernelFeatureError{Feature: "AF_XDP sockets", Minimum: "4.18", Err: err}
			}
			return fmt.Errorf("xdp: socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	cfg = q.cfg
	for s := cfg.FrameSize; s > 1; s >>= 1 {
		q.shift++
	}
	q.umem = pageAligned((cfg.NumFrames + cfg.LentFrames) * cfg.FrameSize)
	if err := q.setup(ifindex); err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("xdp: eventfd: %w", err)
	}
	q.wake = os.NewFile(uintptr(efd), "xdp-wake")
	q.pfds = [2]unix.PollFd{{Fd: int32(q.fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
	q.openNetpoll()
	q.Refill()
	return q, nil
}

// openNetpoll hands Go's netpoller an epoll instance of the queue's own
// that watches the socket for received frames only. The netpoller would
// watch the socket itself for writing too, edge-triggered: then every
// transmitted frame, when the kernel frees its copy, wakes a thread idle
// in epoll_wait, whose look at the socket (in copy mode that look drives
// transmission, xsk_poll) waits for the lock the kick in progress holds.
// It is not an error when this fails: Wait then uses poll(2).
func (q *Queue) openNetpoll() {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(q.fd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, q.fd, &ev); err != nil {
		unix.Close(epfd)
		return
	}
	if q.np, err = newNPWait(epfd, "xdp-socket-epoll", q.rx.Filled); err == nil {
		q.addWatcher(epfd)
	}
}

// addWatcher and dropWatcher keep the list of epoll instances watching
// the socket for input; an instance added watches as the others do.
func (q *Queue) addWatcher(epfd int) {
	if len(q.watchers) == 0 {
		q.watching = true
	} else if !q.watching {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, q.fd, &unix.EpollEvent{})
	}
	q.watchers = append(q.watchers, epfd)
}

func (q *Queue) dropWatcher(epfd int) {
	if i := slices.Index(q.watchers, epfd); i >= 0 {
		q.watchers = slices.Delete(q.watchers, i, i+1)
	}
}

// watch has the epoll instances watch the socket for input (on), or
// stop (off). While it watches, every frame that arrives has a thread
// idle in epoll_wait look at the socket, and in copy mode that look
// transmits what is on the tx ring, under the socket's mutex: against a
// kick of a full batch in progress, it spins on that mutex for the whole
// batch. So the socket is watched only while the owner waits (Wait), and
// not while it sends batches (Kick). Turning the watch on looks at the
// socket once, so frames that came meanwhile still end the next Wait.
func (q *Queue) watch(on bool) {
	if len(q.watchers) == 0 || q.watching == on {
		return
	}
	var ev unix.EpollEvent
	if on {
		ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(q.fd)}
	}
	for _, w := range q.watchers {
		unix.EpollCtl(w, unix.EPOLL_CTL_MOD, q.fd, &ev)
	}
	q.watching = on
}

func (q *Queue) initRings() {
	c := &q.cfg
	q.fill = ring.NewProd(q.fillMap.prod, q.fillMap.cons, uint32(c.FillSize))
	q.tx = ring.NewProd(q.txMap.prod, q.txMap.cons, uint32(c.TxSize))
	q.comp = ring.NewCons(q.compMap.prod, q.compMap.cons, uint32(c.CompletionSize))
	q.rx = ring.NewCons(q.rxMap.prod, q.rxMap.cons, uint32(c.RxSize))
	q.fillAddrs = q.fillMap.addrs(c.FillSize)
	q.compAddrs = q.compMap.addrs(c.CompletionSize)
	q.rxDescs = q.rxMap.descs(c.RxSize)
	q.txDescs = q.txMap.descs(c.TxSize)
}

// FD returns the socket's file descriptor, for registering it in an XSKMAP.
func (q *Queue) FD() int { return q.fd }

// Config returns the queue's configuration with defaults filled in.
func (q *Queue) Config() Config { return q.cfg }

// Mode reports the copy mode the kernel granted.
func (q *Queue) Mode() Mode { return q.mode }

// ZeroCopyErr says why the driver refused a zero-copy bind, so the queue
// runs in copy mode: nil when zero-copy was granted, or not tried
// (Config.ForceCopy).
func (q *Queue) ZeroCopyErr() error { return q.zcErr }

// MultiBuffer reports whether the queue was bound with multi-buffer
// support (XDP_USE_SG): a packet may then span several UMEM frames, its
// descriptors but the last marked with PktContd. Receive and Transmit
// take and put whole packets only.
func (q *Queue) MultiBuffer() bool { return q.sg }

// MultiBufferErr says why a queue whose interface MTU needs multi-buffer
// frames was bound without them (the kernel or driver refused, or
// Config.SingleBuffer); nil otherwise. Frames longer than RxFrameLen are
// then dropped by the kernel.
func (q *Queue) MultiBufferErr() error { return q.sgErr }

// MaxFrameLen returns the longest Ethernet frame (header included) the
// queue receives and sends: MaxPacketLen with multi-buffer frames,
// RxFrameLen without.
func (q *Queue) MaxFrameLen() int {
	if q.sg {
		return MaxPacketLen(q.cfg.FrameSize)
	}
	return q.RxFrameLen()
}

// needsMultiBuffer reports whether frames of the interface's MTU (with a
// VLAN tag) are longer than one UMEM frame receives.
func (q *Queue) needsMultiBuffer() bool {
	return q.ifMTU+ethLen+vlanLen > q.RxFrameLen()
}

// ModeReport says how the queue moves frames and, in copy mode, why:
// "zero-copy", "copy (zero-copy refused: ...)" or "copy (forced)"; then,
// where the MTU needs frames of several UMEM frames, whether it has them:
// ", multi-buffer frames" or ", single-buffer frames (...)".
func (q *Queue) ModeReport() string {
	var s string
	switch {
	case q.mode == ModeZeroCopy:
		s = q.mode.String()
	case q.zcErr != nil:
		s = fmt.Sprintf("%v (zero-copy refused: %v)", q.mode, q.zcErr)
	case q.cfg.ForceCopy:
		s = fmt.Sprintf("%v (forced)", q.mode)
	default:
		s = q.mode.String()
	}
	switch {
	case q.sg:
		s += ", multi-buffer frames"
	case q.sgErr != nil:
		s += fmt.Sprintf(", single-buffer frames (%v)", q.sgErr)
	}
	return s
}

// Pool returns the queue's frame pool (owner only).
func (q *Queue) Pool() *Pool { return q.pool }

// Stats returns the queue's own counters (owner only).
func (q *Queue) Stats() Stats { return q.stats }

// KernelStats returns the kernel's XDP_STATISTICS for the socket.
func (q *Queue) KernelStats() (KernelStats, error) { return q.kernelStats() }

// FrameSize returns the UMEM frame size.
func (q *Queue) FrameSize() int { return q.cfg.FrameSize }

// RxFrameLen returns the longest Ethernet frame the queue receives: the
// frame size less the kernel's headroom. The kernel drops a longer frame
// (KernelStats.RxDropped) before it reaches the rx ring.
func (q *Queue) RxFrameLen() int { return RxFrameLen(q.cfg.FrameSize) }

// Frame returns frame f's whole buffer, FrameSize bytes.
func (q *Queue) Frame(f uint32) []byte {
	off := int(f) << q.shift
	return q.umem[off : off+q.cfg.FrameSize : off+q.cfg.FrameSize]
}

// Data returns the bytes a descriptor points at.
func (q *Queue) Data(d Desc) []byte {
	return q.umem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)]
}

// FrameOf returns the frame a descriptor lies in.
func (q *Queue) FrameOf(d Desc) uint32 { return uint32(d.Addr >> q.shift) }

// Addr returns the UMEM offset of frame f, for a tx descriptor.
func (q *Queue) Addr(f uint32) uint64 { return uint64(f) << q.shift }

// Refill moves free frames onto the fill ring, as many as fit, once the
// ring has run a batch below full, and returns how many it moved.
func (q *Queue) Refill() int {
	// Top the ring up in batches: reading the kernel's consumer index
	// and publishing ours move cache lines between CPUs, once per batch
	// instead of once per frame. The kernel still holds all but a batch.
	if q.pool.Count(PlaceFill) > q.cfg.FillSize-min(refillBatch, q.cfg.FillSize/4) {
		return 0
	}
	want := min(uint32(q.pool.Free()), q.fill.Free())
	if want == 0 {
		if q.pool.Free() == 0 {
			q.stats.FillEmpty++
		}
		return 0
	}
	idx, got := q.fill.Reserve(want)
	mask := q.fill.Mask()
	for i := range got {
		f, _ := q.pool.Get(PlaceFill)
		q.fillAddrs[(idx+i)&mask] = q.Addr(f)
	}
	q.fill.Submit(got)
	return int(got)
}

// refillBatch is how far the fill ring may run below full before Refill
// tops it up.
const refillBatch = 32

// Receive takes up to len(descs) received frames from the rx ring into descs
// and returns how many it took. The frames are then held by the owner, who
// returns each with Release once done with it. With multi-buffer frames it
// takes whole packets only (a packet's descriptors but the last carry
// PktContd), so descs should hold at least MaxPacketFrames.
func (q *Queue) Receive(descs []Desc) int { return q.ReceivePackets(descs, len(descs)) }

// ReceivePackets is Receive taking at most packets packets, however many
// frames each spans.
func (q *Queue) ReceivePackets(descs []Desc, packets int) int {
	want := uint32(min(len(descs), packets))
	if q.sg {
		want = uint32(len(descs))
	}
	idx, got := q.rx.Peek(want)
	if q.sg && got > 0 {
		idx, got = q.wholeRx(idx, got, want, packets)
	}
	if got == 0 {
		// In modes where the kernel waits to be told about new fill
		// entries, tell it; veth in copy mode never asks.
		if q.needWakeup(q.fillMap) {
			q.stats.RxWakeups++
			q.wakeRx()
		}
		return 0
	}
	mask := q.rx.Mask()
	for i := range got {
		d := q.rxDescs[(idx+i)&mask]
		descs[i] = d
		q.pool.Move(q.FrameOf(d), PlaceFill, PlaceHeld)
	}
	q.rx.Release(got)
	q.stats.RxFrames += uint64(got)
	return int(got)
}

// wholeRx trims a peeked batch of got descriptors from idx to at most
// packets whole packets, giving the rest back. The kernel publishes a
// packet's descriptors together, so a cut packet is one the batch or the
// cached producer index cut short: look again once.
func (q *Queue) wholeRx(idx, got, want uint32, packets int) (uint32, uint32) {
	mask := q.rx.Mask()
	for again := true; ; again = false {
		n, left := uint32(0), packets
		for i := uint32(0); i < got && left > 0; i++ {
			if q.rxDescs[(idx+i)&mask].Options&PktContd == 0 {
				n, left = i+1, left-1
			}
		}
		q.rx.Cancel(got - n)
		if n > 0 || !again || got == want || q.rx.Available() <= got {
			return idx, n
		}
		idx, got = q.rx.Peek(want)
	}
}

// Alloc takes a free frame for the owner to build a frame in. It reports
// false when every frame is in use: back-pressure, not an error.
func (q *Queue) Alloc() (uint32, bool) { return q.pool.Get(PlaceHeld) }

// Release returns a held frame to the pool.
func (q *Queue) Release(f uint32) { q.pool.Put(f, PlaceHeld) }

// Transmit puts up to len(descs) held frames on the tx ring and returns how
// many it queued; the rest stay held. Call Kick to have the kernel send them.
// With multi-buffer frames it puts whole packets only: a packet whose
// descriptors do not all fit waits for the next call.
func (q *Queue) Transmit(descs []Desc) int {
	idx, got := q.tx.Reserve(uint32(len(descs)))
	if got < uint32(len(descs)) {
		q.stats.TxRingFull++
		if q.sg {
			n := got
			for n > 0 && descs[n-1].Options&PktContd != 0 {
				n--
			}
			q.tx.Cancel(got - n)
			got = n
		}
	}
	mask := q.tx.Mask()
	for i := range got {
		d := descs[i]
		q.txDescs[(idx+i)&mask] = d
		if f := q.FrameOf(d); int(f) < q.cfg.NumFrames {
			q.pool.Move(f, PlaceHeld, PlaceTx)
		} else {
			q.lentTx++
		}
	}
	q.tx.Submit(got)
	q.stats.TxFrames += uint64(got)
	return int(got)
}

// Kick asks the kernel to send what is on the tx ring, when it needs asking.
// The kernel sends a bounded batch per call, so Kick repeats while frames
// remain, up to a bound. EAGAIN and ENOBUFS mean "try again later" and
// return nil. EBUSY means the driver dropped a frame the kernel then
// completed; it is counted in TxDropped. A downed or vanished interface
// returns a *LinkError, which matches ENETDOWN.
func (q *Queue) Kick() error {
	if !q.needWakeup(q.txMap) {
		return nil
	}
	size := uint32(q.cfg.TxSize)
	if q.watching && size-q.tx.Free() >= quietBatch {
		q.watch(false)
	}
	for tries := 0; tries < maxKicks && q.tx.Free() < size; tries++ {
		q.stats.Kicks++
		switch errno := q.kick(); errno {
		case 0, unix.EINTR, unix.EAGAIN:
		case unix.EBUSY:
			q.stats.TxDropped++
		case unix.ENOBUFS:
			q.stats.KickRetries++
			return nil
		default:
			return &LinkError{Op: "transmit", Interface: q.cfg.Interface, Err: errno}
		}
	}
	return nil
}

// quietBatch is the smallest kick for which the socket stops being watched
// (see watch): a batch long enough that a look at the socket waiting for
// it costs more than the two epoll_ctl calls; a message of a few frames
// does not pay them.
const quietBatch = 16

// maxKicks bounds the sendto calls of one Kick, so a driver that keeps
// answering busy cannot hold the poller.
const maxKicks = 64

// Complete returns frames the kernel has sent to the free pool and reports
// how many.
func (q *Queue) Complete() int {
	idx, got := q.comp.Peek(uint32(q.cfg.CompletionSize))
	if got == 0 {
		return 0
	}
	mask := q.comp.Mask()
	for i := range got {
		f := uint32(q.compAddrs[(idx+i)&mask] >> q.shift)
		if int(f) < q.cfg.NumFrames {
			q.pool.Put(f, PlaceTx)
			continue
		}
		q.lentTx--
		if q.lentDone != nil {
			q.lentDone(f - uint32(q.cfg.NumFrames))
		}
	}
	q.comp.Release(got)
	q.stats.Completed += uint64(got)
	return int(got)
}

// TxPending returns how many frames are on the tx ring or in the kernel,
// not yet completed.
func (q *Queue) TxPending() int { return q.pool.Count(PlaceTx) + q.lentTx }

func (q *Queue) needWakeup(m mapping) bool {
	return atomic.LoadUint32(m.flag)&unix.XDP_RING_NEED_WAKEUP != 0
}

// Wait blocks until the rx ring has frames, Wake is called, or the timeout
// passes (negative: no timeout). It reports whether Wake was called. The
// goroutine parks in Go's netpoller, so a Wait costs no thread.
func (q *Queue) Wait(timeout time.Duration) (woken bool, err error) {
	if q.np == nil {
		return q.waitPoll(timeout)
	}
	q.watch(true)
	woken, expired, err := q.np.wait(timeout)
	if woken || expired || err != nil || q.rx.Filled() {
		return woken, err
	}
	// Readable with nothing to read: the socket may have failed
	// (interface gone), which only poll(2) tells.
	return q.waitPoll(0)
}

// waitPoll is Wait in poll(2), on the socket and the wake eventfd.
func (q *Queue) waitPoll(timeout time.Duration) (woken bool, err error) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	for {
		_, errno := q.pollFds(ms)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return false, fmt.Errorf("xdp: poll: %w", errno)
		}
		break
	}
	if q.pfds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
		return false, &LinkError{Op: "poll", Interface: q.cfg.Interface, Err: unix.ENETDOWN}
	}
	if q.pfds[1].Revents&unix.POLLIN != 0 {
		var buf [8]byte
		unix.Read(int(q.pfds[1].Fd), buf[:])
		return true, nil
	}
	return false, nil
}

// Wake makes a Wait in progress, or the next one, return at once. It may be
// called from any goroutine, also after Close (then it does nothing).
func (q *Queue) Wake() {
	if q.closed.Load() {
		return
	}
	if q.np != nil {
		q.np.wake()
		return
	}
	one := [8]byte{1}
	q.wake.Write(one[:]) // a full counter already wakes the poller
}

// Close drains and accounts for every frame, then releases the socket and
// the memory: it takes back completed sends (waiting briefly for the kernel
// to finish those in flight) and unread receives, reclaims what sat in the
// kernel's rings, checks the accounting, unmaps the rings, closes the socket
// and unmaps the UMEM. The owner must have stopped using the queue; Close is
// idempotent. It returns ErrFramesHeld (after reclaiming them) when the
// owner still held frames.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	var errs []error
	deadline := time.Now().Add(100 * time.Millisecond)
	for q.TxPending() > 0 && time.Now().Before(deadline) {
		q.Kick()
		if q.Complete() == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	var descs [64]Desc
	for {
		n := q.Receive(descs[:])
		if n == 0 {
			break
		}
		for _, d := range descs[:n] {
			q.Release(q.FrameOf(d))
		}
	}
	if n := q.pool.Count(PlaceHeld); n > 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrFramesHeld, n))
	}
	// The kernel drops its rings with the socket and returns nothing; what
	// was on them is ours again.
	for _, pl := range []Place{PlaceFill, PlaceRx, PlaceHeld, PlaceTx, PlaceCompletion} {
		q.pool.reclaim(pl)
	}
	if err := q.pool.Check(); err != nil {
		errs = append(errs, err)
	}
	if q.pool.Free() != q.pool.Len() {
		errs = append(errs, fmt.Errorf("xdp: %d of %d frames free after close: %v", q.pool.Free(), q.pool.Len(), q.pool))
	}
	errs = append(errs, q.release())
	return errors.Join(errs...)
}

// release unmaps the rings, closes the socket and the eventfd, and unmaps
// the UMEM, in that order.
func (q *Queue) release() error {
	var errs []error
	for _, m := range []*mapping{&q.fillMap, &q.compMap, &q.rxMap, &q.txMap} {
		if m.mem != nil {
			errs = append(errs, unix.Munmap(m.mem))
			*m = mapping{}
		}
	}
	if q.fd >= 0 {
		errs = append(errs, unix.Close(q.fd))
		q.fd = -1
	}
	if q.np != nil {
		errs = append(errs, q.np.close())
	}
	if q.wake != nil {
		errs = append(errs, q.wake.Close())
	}
	// The UMEM is Go memory: whoever still holds lent frames' slices
	// keeps it alive, and the kernel let go of it with the socket.
	q.umem = nil
	return errors.Join(errs...)
}
