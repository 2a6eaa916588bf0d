package xdp

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/bpf"
)

// Desc is an rx/tx ring descriptor, laid out as the kernel's struct xdp_desc.
type Desc struct {
	Addr    uint64 // UMEM offset of the first byte of the frame data
	Len     uint32 // frame length in bytes
	Options uint32 // PktContd on every descriptor of a multi-buffer packet but its last
}

// PktContd marks a descriptor that another of the same packet follows
// (XDP_PKT_CONTD), with multi-buffer frames (Queue.MultiBuffer).
const PktContd = unix.XDP_PKT_CONTD

// mapping is one mmap of a kernel ring.
type mapping struct {
	mem  []byte
	prod *uint32 // producer index
	cons *uint32 // consumer index
	flag *uint32 // ring flags (XDP_RING_NEED_WAKEUP)
	desc unsafe.Pointer
}

func mapRing(fd int, pgoff int64, off unix.XDPRingOffset, n int, descSize uintptr) (mapping, error) {
	size := int(off.Desc) + n*int(descSize)
	mem, err := unix.Mmap(fd, pgoff, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return mapping{}, err
	}
	base := unsafe.Pointer(&mem[0])
	return mapping{
		mem:  mem,
		prod: (*uint32)(unsafe.Add(base, off.Producer)),
		cons: (*uint32)(unsafe.Add(base, off.Consumer)),
		flag: (*uint32)(unsafe.Add(base, off.Flags)),
		desc: unsafe.Add(base, off.Desc),
	}, nil
}

func (m mapping) addrs(n int) []uint64 { return unsafe.Slice((*uint64)(m.desc), n) }
func (m mapping) descs(n int) []Desc   { return unsafe.Slice((*Desc)(m.desc), n) }

func setsockoptPtr(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func getsockoptPtr(fd, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// setup registers the UMEM, sizes and maps the four rings, and binds the
// socket. The socket was created in the configured namespace already.
func (q *Queue) setup(ifindex int) error {
	c := &q.cfg
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&q.umem[0]))),
		Len:  uint64(len(q.umem)),
		Size: uint32(c.FrameSize),
	}
	if err := setsockoptPtr(q.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		if errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("xdp: register %d KiB UMEM: %w (raise the locked-memory limit, ulimit -l, or run with CAP_IPC_LOCK)", len(q.umem)>>10, err)
		}
		return fmt.Errorf("xdp: register UMEM: %w", err)
	}
	for _, r := range []struct {
		opt  int
		size int
	}{{unix.XDP_UMEM_FILL_RING, c.FillSize}, {unix.XDP_UMEM_COMPLETION_RING, c.CompletionSize}, {unix.XDP_RX_RING, c.RxSize}, {unix.XDP_TX_RING, c.TxSize}} {
		if err := unix.SetsockoptInt(q.fd, unix.SOL_XDP, r.opt, r.size); err != nil {
			return fmt.Errorf("xdp: size ring (option %d) to %d: %w", r.opt, r.size, err)
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockoptPtr(q.fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fmt.Errorf("xdp: ring offsets: %w", err)
	}
	var err error
	if q.fillMap, err = mapRing(q.fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, c.FillSize, 8); err != nil {
		return fmt.Errorf("xdp: map fill ring: %w", err)
	}
	if q.compMap, err = mapRing(q.fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, c.CompletionSize, 8); err != nil {
		return fmt.Errorf("xdp: map completion ring: %w", err)
	}
	if q.rxMap, err = mapRing(q.fd, unix.XDP_PGOFF_RX_RING, off.Rx, c.RxSize, unsafe.Sizeof(Desc{})); err != nil {
		return fmt.Errorf("xdp: map rx ring: %w", err)
	}
	if q.txMap, err = mapRing(q.fd, unix.XDP_PGOFF_TX_RING, off.Tx, c.TxSize, unsafe.Sizeof(Desc{})); err != nil {
		return fmt.Errorf("xdp: map tx ring: %w", err)
	}
	q.initRings()

	if err := q.bindBest(ifindex); err != nil {
		return err
	}
	var opts uint32
	if err := getsockoptPtr(q.fd, unix.XDP_OPTIONS, unsafe.Pointer(&opts), unsafe.Sizeof(opts)); err != nil {
		return fmt.Errorf("xdp: socket options: %w", err)
	}
	q.mode = ModeCopy
	if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		q.mode = ModeZeroCopy
	}
	return nil
}

// bindBest binds in the best mode the kernel and driver grant: zero-copy
// first, where the driver offers it, then copy mode (veth always refuses
// zero-copy); with multi-buffer frames (XDP_USE_SG) first when the MTU
// needs them, then without. The refusals are kept for the reports.
// Every bind uses need_wakeup.
func (q *Queue) bindBest(ifindex int) error {
	c := &q.cfg
	sg := q.needsMultiBuffer()
	if sg && c.SingleBuffer {
		sg, q.sgErr = false, errSingleBuffer
	}
	zcRefused := c.ForceCopy
	for _, try := range [...]struct{ zc, sg bool }{{true, true}, {false, true}, {true, false}, {false, false}} {
		if try.zc && zcRefused || try.sg && (!sg || q.sgErr != nil) {
			continue
		}
		flags := uint16(unix.XDP_USE_NEED_WAKEUP | unix.XDP_COPY)
		if try.zc {
			flags = unix.XDP_USE_NEED_WAKEUP | unix.XDP_ZEROCOPY
		}
		if try.sg {
			flags |= unix.XDP_USE_SG
		}
		err := q.bind(ifindex, flags)
		switch {
		case err == nil:
			q.sg = try.sg
			if try.zc {
				q.zcErr = nil
			}
			return nil
		case !zeroCopyRefused(err):
			return q.bindErr(err)
		case try.zc:
			// Refused: copy mode next. Zero-copy refused only with
			// multi-buffer is tried again without it, should copy
			// mode refuse multi-buffer too.
			q.zcErr = err
			zcRefused = !try.sg
		default:
			// Copy mode with multi-buffer refused: the kernel lacks it.
			q.sgErr = &bpf.KernelFeatureError{Feature: "AF_XDP multi-buffer frames (XDP_USE_SG)", Minimum: "6.6", Err: err}
		}
	}
	return q.bindErr(unix.EINVAL)
}

// errSingleBuffer is MultiBufferErr for a queue configured without.
var errSingleBuffer = errors.New("single-buffer frames requested (Config.SingleBuffer)")

// bind binds the socket to its interface and queue with flags. A queue
// whose previous socket just closed can refuse the bind with EBUSY for a
// moment while the kernel tears the old one down.
func (q *Queue) bind(ifindex int, flags uint16) error {
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(ifindex), QueueID: uint32(q.cfg.Queue)}
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := unix.Bind(q.fd, sa)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// zeroCopyRefused reports whether a zero-copy bind failed because the
// driver or the queue does not offer zero-copy, so copy mode may work.
func zeroCopyRefused(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EINVAL)
}

// bindErr says what a failed bind means.
func (q *Queue) bindErr(err error) error {
	c := &q.cfg
	switch {
	case errors.Is(err, unix.EINVAL) && c.Queue > 0:
		return fmt.Errorf("xdp: bind %s queue %d: %w (does the interface have that many queues?)", c.Interface, c.Queue, err)
	case errors.Is(err, unix.EINVAL):
		return &bpf.KernelFeatureError{Feature: "AF_XDP with need_wakeup", Minimum: "5.4", Err: err}
	case errors.Is(err, unix.EBUSY):
		// Still busy after the grace in bind: not a socket going away but
		// one that lives.
		return fmt.Errorf("xdp: bind %s queue %d: %w: another sdx stack (or another AF_XDP socket) holds this queue; close it or use another queue", c.Interface, c.Queue, err)
	}
	return fmt.Errorf("xdp: bind %s queue %d: %w", c.Interface, c.Queue, err)
}

// KernelStats are the socket's XDP_STATISTICS counters.
type KernelStats struct {
	RxDropped        uint64 // frames dropped for reasons other than invalid descriptors
	RxInvalid        uint64 // rx frames dropped for invalid descriptors
	TxInvalid        uint64 // tx descriptors the kernel rejected
	RxRingFull       uint64 // frames dropped because the rx ring was full (overrun)
	FillRingEmpty    uint64 // times the kernel found the fill ring empty
	TxRingEmptyDescs uint64 // times the kernel found the tx ring empty
}

func (q *Queue) kernelStats() (KernelStats, error) {
	var s unix.XDPStatistics
	if err := getsockoptPtr(q.fd, unix.XDP_STATISTICS, unsafe.Pointer(&s), unsafe.Sizeof(s)); err != nil {
		return KernelStats{}, fmt.Errorf("xdp: statistics: %w", err)
	}
	return KernelStats{s.Rx_dropped, s.Rx_invalid_descs, s.Tx_invalid_descs, s.Rx_ring_full, s.Rx_fill_ring_empty_descs, s.Tx_ring_empty_descs}, nil
}

// kick asks the kernel to process the tx ring, without blocking.
//
// The kick is a raw system call: with MSG_DONTWAIT an AF_XDP socket's
// sendto never blocks (in copy mode it carries out the transmission
// itself, a few microseconds a batch). Announcing it to the scheduler
// (Syscall) costs more than the call when the process is otherwise idle,
// as a request-response process is between messages: the runtime wakes
// its sysmon thread from its idle sleep on the way in, a futex wake and a
// context switch per kick.
func (q *Queue) kick() unix.Errno {
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(q.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return errno
}

// wakeRx asks the kernel to process the fill ring, without blocking (a
// raw system call, as kick).
func (q *Queue) wakeRx() unix.Errno {
	_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(q.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return errno
}

// pollFds waits in poll(2) on the socket and the wake eventfd.
func (q *Queue) pollFds(timeoutMs int) (int, unix.Errno) {
	n, _, errno := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&q.pfds[0])), uintptr(len(q.pfds)), uintptr(timeoutMs))
	return int(n), errno
}

// Add returns the sum of two sockets' counters.
func (s KernelStats) Add(o KernelStats) KernelStats {
	return KernelStats{s.RxDropped + o.RxDropped, s.RxInvalid + o.RxInvalid, s.TxInvalid + o.TxInvalid,
		s.RxRingFull + o.RxRingFull, s.FillRingEmpty + o.FillRingEmpty, s.TxRingEmptyDescs + o.TxRingEmptyDescs}
}

// pageAligned returns n bytes of Go memory that begin on a page, as the
// kernel wants a UMEM to. Go never moves it, and it lives while anyone
// holds a slice of it, also after the socket is closed.
func pageAligned(n int) []byte {
	page := unix.Getpagesize()
	b := make([]byte, n+page)
	off := (page - int(uintptr(unsafe.Pointer(&b[0]))&uintptr(page-1))) & (page - 1)
	return b[off : off+n : off+n]
}
