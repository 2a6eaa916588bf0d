package xdp

import "math/bits"

// Mode is the copy mode the kernel granted a socket.
type Mode uint8

const (
	ModeCopy     Mode = iota + 1 // frames are copied between UMEM and the driver (veth, generic XDP)
	ModeZeroCopy                 // the driver DMAs straight into UMEM
)

func (m Mode) String() string {
	switch m {
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zero-copy"
	}
	return "unknown"
}

// Config describes an AF_XDP queue. Zero fields take the documented defaults.
type Config struct {
	// Netns is the network namespace to open the socket in: a name under
	// /run/netns or a path. Empty means the caller's namespace.
	Netns string
	// Interface is the network interface name inside Netns.
	Interface string
	// Queue is the interface's rx/tx queue id (default 0).
	Queue int

	// FrameSize is the UMEM frame size, 2048 or 4096. The default is 2048,
	// or 4096 when the interface's MTU is above MaxMTU2048: a received
	// frame must fit in what the kernel leaves of a UMEM frame after its
	// headroom (see RxFrameLen).
	FrameSize int
	// NumFrames is the UMEM frame count, a power of two (default 4096).
	NumFrames int
	// FillSize, CompletionSize, RxSize and TxSize are ring sizes in
	// descriptors, powers of two (defaults 2048, 2048, 2048, 2048). The fill
	// ring should be at least the rx ring, and the frames should cover the
	// fill ring plus what the owner keeps in flight.
	FillSize, CompletionSize, RxSize, TxSize int

	// LentFrames adds frames to the UMEM, after the NumFrames the queue's
	// pool manages, that the owner lends out as it likes: it builds
	// packets there itself (Lent, LentPacket), and their completions go
	// to the function set with SetLentDone instead of to the pool. A
	// provider keeps its send data there, so that a segment is sent, and
	// sent again, from where it was written. Default 0.
	LentFrames int

	// ForceCopy binds in copy mode even where the driver offers zero-copy.
	ForceCopy bool
	// SingleBuffer binds without multi-buffer support (XDP_USE_SG) even
	// where the interface's MTU allows frames longer than a UMEM frame
	// receives; the kernel then drops such frames. By default a queue
	// asks for multi-buffer exactly when the MTU needs it (Linux 6.6),
	// and falls back to single-buffer frames, saying why
	// (Queue.MultiBufferErr), where the kernel or driver refuses.
	SingleBuffer bool
}

// MaxLentFrames bounds Config.LentFrames: 16 GiB of 4 KiB frames.
const MaxLentFrames = 1 << 22

// Defaults used for zero Config fields.
const (
	DefaultFrameSize = 2048
	DefaultNumFrames = 4096
	DefaultRingSize  = 2048
)

// XDPPacketHeadroom is the headroom the kernel keeps in front of every
// received frame in a UMEM frame (XDP_PACKET_HEADROOM), in copy and in
// zero-copy mode, on top of the UMEM's own headroom (0 here, as in
// asavie/xdp).
const XDPPacketHeadroom = 256

// ethLen is the Ethernet header, which the interface MTU does not count;
// vlanLen an 802.1Q tag, which a frame of the MTU may carry on top.
const (
	ethLen  = 14
	vlanLen = 4
)

// RxFrameLen is the longest Ethernet frame (header included) a UMEM frame
// of frameSize bytes receives; the kernel drops longer ones and counts them
// in KernelStats.RxDropped.
func RxFrameLen(frameSize int) int { return frameSize - XDPPacketHeadroom }

// MaxMTU2048 is the largest interface MTU whose frames fit a 2048-byte
// UMEM frame on receive (1778); above it FrameSize defaults to 4096.
const MaxMTU2048 = 2048 - XDPPacketHeadroom - ethLen

// MaxPacketFrames is the most descriptors one multi-buffer packet takes:
// the kernel's bound in copy mode (MAX_SKB_FRAGS + 1); a longer packet is
// dropped as invalid.
const MaxPacketFrames = 18

// MaxPacketLen is the longest Ethernet frame (header included) a queue
// with multi-buffer frames carries: MaxPacketFrames descriptors of
// RxFrameLen each, within the 64 KiB an IPv4 packet is.
func MaxPacketLen(frameSize int) int {
	return min(MaxPacketFrames*RxFrameLen(frameSize), 65535+ethLen)
}

// FrameSizeFor is the default FrameSize for an interface MTU.
func FrameSizeFor(mtu int) int {
	if mtu > MaxMTU2048 {
		return 4096
	}
	return DefaultFrameSize
}

// setDefaults fills the zero fields but FrameSize, whose default depends
// on the interface (see Open).
func (c *Config) setDefaults() {
	if c.NumFrames == 0 {
		c.NumFrames = DefaultNumFrames
	}
	for _, p := range []*int{&c.FillSize, &c.CompletionSize, &c.RxSize, &c.TxSize} {
		if *p == 0 {
			*p = DefaultRingSize
		}
	}
}

// validate checks the configuration up front, with errors that say what to
// change.
func (c *Config) validate() error {
	if c.Interface == "" {
		return configErr("Interface is empty; name the interface to open")
	}
	if c.Queue < 0 {
		return configErr("Queue %d is negative", c.Queue)
	}
	if c.FrameSize != 0 && c.FrameSize != 2048 && c.FrameSize != 4096 {
		return configErr("FrameSize %d: use 2048 or 4096", c.FrameSize)
	}
	for _, r := range []struct {
		name string
		n    int
	}{{"NumFrames", c.NumFrames}, {"FillSize", c.FillSize}, {"CompletionSize", c.CompletionSize}, {"RxSize", c.RxSize}, {"TxSize", c.TxSize}} {
		if r.n <= 0 || bits.OnesCount(uint(r.n)) != 1 {
			return configErr("%s %d: use a power of two", r.name, r.n)
		}
		if r.n > 1<<20 {
			return configErr("%s %d: at most %d", r.name, r.n, 1<<20)
		}
	}
	if c.LentFrames < 0 || c.LentFrames > MaxLentFrames {
		return configErr("LentFrames %d: use 0 to %d", c.LentFrames, MaxLentFrames)
	}
	if c.NumFrames < c.FillSize {
		return configErr("NumFrames %d is below FillSize %d: raise NumFrames or lower FillSize", c.NumFrames, c.FillSize)
	}
	return nil
}
