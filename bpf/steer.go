package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// MaxQueues is the number of rx queues the steering program can serve: the
// size of its XSKMAP. Frames arriving on a higher queue go to the kernel.
const MaxQueues = 64

// Steer is the loaded sdx_steer program with its maps. Every method may be
// called from any goroutine; Close waits for calls in progress and is
// idempotent. Closing a Steer does not detach the program: an attachment
// (see Attach) holds its own reference until its link is closed.
type Steer struct {
	port uint16

	// mu guards objs against Close: methods hold it for reading while they
	// use the program or a map, Close holds it for writing.
	mu     sync.RWMutex
	closed bool
	objs   steerObjects // SdxSteer is nil when the kernel refused it

	fragsErr error // why SdxSteer is not loaded; set before s is shared
}

// SteerStats are the program's counters summed over all CPUs. Every run of
// the program adds one to Seen and one to exactly one of Redirected,
// NoSocket, Passed, Malformed, Foreign and Spoofed, so Seen is their sum
// whenever the program is not running. Unreach counts the ICMP errors among
// Redirected and NoSocket.
type SteerStats struct {
	Seen       uint64 // frames the program ran on
	Redirected uint64 // sdx frames handed to the socket registered for their queue
	NoSocket   uint64 // sdx frames with no socket on their queue: passed to the kernel
	Passed     uint64 // well-formed frames that are not sdx frames: passed
	Malformed  uint64 // truncated frames or bad headers: passed
	Foreign    uint64 // UDP to the sdx port of an address not served: passed
	Spoofed    uint64 // sdx frames (or ICMP errors about them) from a source nobody may answer: dropped
	Unreach    uint64 // ICMP port unreachables about sdx frames we sent, steered like sdx frames
}

// MaxAddrs is how many addresses (served or not) the program can know.
const MaxAddrs = 64

// AnyAddr, served, makes the program steer sdx frames to any destination:
// for a raw test host that reads other hosts' frames, never for a stack.
var AnyAddr = netip.PrefixFrom(netip.IPv4Unspecified(), 0)

// LoadSteer loads sdx_steer into the kernel, configured to steer UDP
// datagrams to port (host byte order). The program is not attached.
func LoadSteer(port uint16) (*Steer, error) {
	if port == 0 {
		return nil, fmt.Errorf("load steer: port 0: %w", ErrPort)
	}
	spec, err := loadSteer()
	if err != nil {
		return nil, fmt.Errorf("load steer: %w", err)
	}
	v, ok := spec.Variables[steerVarSdxPort]
	if !ok {
		return nil, fmt.Errorf("load steer: object has no variable %s", steerVarSdxPort)
	}
	if err := v.Set(port); err != nil {
		return nil, fmt.Errorf("load steer: set port: %w", err)
	}
	s := &Steer{port: port}
	err = errLoadFrags
	if loadFrags {
		err = spec.LoadAndAssign(&s.objs, nil)
	}
	if err != nil {
		// A kernel before 5.18 knows neither BPF_F_XDP_HAS_FRAGS nor
		// bpf_xdp_get_buff_len: load the plain program alone.
		var plain struct {
			Prog *ebpf.Program `ebpf:"sdx_steer_plain"`
			steerMaps
		}
		if perr := spec.LoadAndAssign(&plain, nil); perr != nil {
			if errors.Is(perr, ebpf.ErrNotSupported) {
				perr = &KernelFeatureError{Feature: "the steering program (XDP, XSKMAP, global data)", Minimum: MinKernel, Err: perr}
			}
			return nil, fmt.Errorf("load steer: %w", perr)
		}
		s.objs.SdxSteerPlain, s.objs.steerMaps = plain.Prog, plain.steerMaps
		s.fragsErr = &KernelFeatureError{Feature: "frags-aware XDP programs (BPF_F_XDP_HAS_FRAGS)", Minimum: MinKernelFrags, Err: err}
	}
	return s, nil
}

// loadFrags is false only in tests that take the path of a kernel without
// frags-aware programs; errLoadFrags is what they see instead.
var (
	loadFrags    = true
	errLoadFrags = errors.New("frags-aware programs not loaded (test)")
)

// Port returns the UDP destination port the program steers.
func (s *Steer) Port() uint16 { return s.port }

// Program returns the XDP program to attach with Attach: the frags-aware
// one when the kernel loaded it, else the plain one. It stays owned by s:
// do not close it. After Close it is a closed program.
func (s *Steer) Program() *ebpf.Program {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs.SdxSteer != nil {
		return s.objs.SdxSteer
	}
	return s.objs.SdxSteerPlain
}

// Programs returns the programs to try attaching, in order of preference:
// the frags-aware one (when loaded), then the plain one, which a driver
// that refuses frags-aware programs may still take. Both share the maps.
func (s *Steer) Programs() []*ebpf.Program {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs.SdxSteer == nil {
		return []*ebpf.Program{s.objs.SdxSteerPlain}
	}
	return []*ebpf.Program{s.objs.SdxSteer, s.objs.SdxSteerPlain}
}

// FragsErr says why the frags-aware program was not loaded (a
// *KernelFeatureError); nil when it was.
func (s *Steer) FragsErr() error { return s.fragsErr }

// IsFrags reports whether p is a frags-aware program of s.
func (s *Steer) IsFrags(p *ebpf.Program) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return p != nil && p == s.objs.SdxSteer
}

// Register makes the AF_XDP socket fd the destination of sdx frames that
// arrive on rx queue queue, replacing any socket registered there before.
// The kernel accepts only an AF_XDP socket with an rx ring, and redirects to
// it only frames from the queue and device the socket is bound to. The map
// holds its own reference to the socket until Unregister or Close.
func (s *Steer) Register(queue int, fd int) error {
	if queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("register queue %d: %w (0..%d)", queue, ErrQueueRange, MaxQueues-1)
	}
	if fd < 0 {
		return fmt.Errorf("register queue %d: fd %d: %w", queue, fd, syscall.EBADF)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("register queue %d: %w", queue, ErrClosed)
	}
	if err := s.objs.Xsks.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("register queue %d fd %d: %w", queue, fd, err)
	}
	return nil
}

// Unregister removes the socket registered for rx queue queue, if any; sdx
// frames on that queue then go to the kernel.
func (s *Steer) Unregister(queue int) error {
	if queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("unregister queue %d: %w (0..%d)", queue, ErrQueueRange, MaxQueues-1)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("unregister queue %d: %w", queue, ErrClosed)
	}
	err := s.objs.Xsks.Delete(uint32(queue))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregister queue %d: %w", queue, err)
	}
	return nil
}

// AddAddr tells the program about one IPv4 address of the host, with its
// subnet (p.Addr() and p.Bits()). With serve, sdx frames to it are steered;
// without, they go to the kernel. Either way, frames from it, and from the
// network and broadcast addresses of a served address's subnet, are
// dropped as spoofed. Adding an address again replaces it.
func (s *Steer) AddAddr(p netip.Prefix, serve bool) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("steer address %v: not an IPv4 prefix: %w", p, ErrAddr)
	}
	a := p.Addr().As4()
	mask := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), p.Bits()).Masked().Addr().As4()
	v := steerSdxAddr{Mask: binary.NativeEndian.Uint32(mask[:])}
	if serve {
		v.Serve = 1
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("steer address %v: %w", p, ErrClosed)
	}
	if err := s.objs.Addrs.Update(binary.NativeEndian.Uint32(a[:]), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("steer address %v: %w", p, err)
	}
	return nil
}

// Stats returns the counters summed over all CPUs.
func (s *Steer) Stats() (SteerStats, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return SteerStats{}, fmt.Errorf("steer stats: %w", ErrClosed)
	}
	var per []steerCounters
	if err := s.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return SteerStats{}, fmt.Errorf("steer stats: %w", err)
	}
	var st SteerStats
	for _, c := range per {
		st.Seen += c.Seen
		st.Redirected += c.Redirected
		st.NoSocket += c.Nosocket
		st.Passed += c.Passed
		st.Malformed += c.Malformed
		st.Foreign += c.Foreign
		st.Spoofed += c.Spoofed
		st.Unreach += c.Unreach
	}
	return st, nil
}

// Close releases the program and maps. Attachments keep the program alive
// until their links are closed. Close is idempotent.
func (s *Steer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.objs.Close(); err != nil {
		return fmt.Errorf("close steer: %w", err)
	}
	return nil
}

// Mode is where in the receive path an XDP program runs.
type Mode int

const (
	// ModeNative runs the program in the driver, before an skb exists
	// (XDP_FLAGS_DRV_MODE). veth supports it.
	ModeNative Mode = iota + 1
	// ModeGeneric runs the program in the core receive path, after the skb
	// is allocated (XDP_FLAGS_SKB_MODE). Every device supports it; it is
	// slower, and AF_XDP then works in copy mode only.
	ModeGeneric
)

func (m Mode) String() string {
	switch m {
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

func (m Mode) flags() (link.XDPAttachFlags, bool) {
	switch m {
	case ModeNative:
		return link.XDPDriverMode, true
	case ModeGeneric:
		return link.XDPGenericMode, true
	}
	return 0, false
}

// Attach attaches prog to the interface with index ifindex in the calling
// thread's network namespace (use sys.InNetns to attach inside another) through
// a bpf_link, and reports the mode granted. The modes are tried in order;
// with none given, Attach tries ModeNative and falls back to ModeGeneric
// when the driver refuses native XDP. Give one mode to force it.
//
// The link is not pinned: the program leaves the interface when the link is
// closed or the process that holds it exits.
func Attach(prog *ebpf.Program, ifindex int, modes ...Mode) (link.Link, Mode, error) {
	if prog == nil {
		return nil, 0, errors.New("attach xdp: nil program")
	}
	if len(modes) == 0 {
		modes = []Mode{ModeNative, ModeGeneric}
	}
	var errs []error
	for _, m := range modes {
		flags, ok := m.flags()
		if !ok {
			return nil, 0, fmt.Errorf("attach xdp to ifindex %d: invalid mode %s", ifindex, m)
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		if err == nil {
			return l, m, nil
		}
		err = fmt.Errorf("attach xdp to ifindex %d in %s mode: %w", ifindex, m, err)
		if errors.Is(err, ebpf.ErrNotSupported) {
			// cilium/ebpf found no bpf_link support at all (before 5.7).
			return nil, 0, &KernelFeatureError{Feature: "XDP attach through bpf_link", Minimum: MinKernel, Err: err}
		}
		errs = append(errs, err)
		if !Refused(err) {
			break
		}
	}
	err := errors.Join(errs...)
	if errors.Is(err, syscall.EINVAL) && kernelBefore(5, 9) {
		// Linux 5.7 and 5.8 have bpf_link, but not for XDP: EINVAL.
		return nil, 0, &KernelFeatureError{Feature: "XDP attach through bpf_link", Minimum: MinKernel, Err: err}
	}
	return nil, 0, err
}

// errENOTSUPP is the kernel-internal ENOTSUPP, which some drivers leak.
const errENOTSUPP = syscall.Errno(524)

// Refused reports whether an attach error means this mode, or this
// program in this mode, is not available on the device (so another may
// be), rather than a problem that nothing else would fix: permissions, a
// missing device, another program in place.
func Refused(err error) bool {
	for _, e := range []error{syscall.EOPNOTSUPP, errENOTSUPP, syscall.EINVAL, syscall.ERANGE, syscall.ENOSPC} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// kernelBefore reports whether the running kernel's release is older than
// major.minor. Unknown counts as not older.
func kernelBefore(major, minor int) bool {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return false
	}
	maj, rest, ok1 := leadingInt(string(b))
	if !ok1 || !strings.HasPrefix(rest, ".") {
		return false
	}
	mnr, _, ok2 := leadingInt(rest[1:])
	if !ok2 {
		return false
	}
	return maj < major || (maj == major && mnr < minor)
}

// leadingInt parses the decimal digits at the start of s.
func leadingInt(s string) (n int, rest string, ok bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(s[:i])
	return n, s[i:], err == nil
}
