// Package bpf holds sdx's XDP programs, the TC programs its tests use, and
// their loaders. The programs are written in C (steer.c, fault.c,
// disorder.c, mark.c), compiled by bpf2go into *_bpfel.o and
// *_bpfel.go, which are committed. There is no socket logic here: the xdp
// package creates AF_XDP sockets and registers them with Steer.Register.
//
// # sdx_steer
//
// sdx_steer runs on every frame an interface receives. It hands sdx frames
// to the AF_XDP socket registered for the frame's rx queue and every other
// frame to the kernel untouched. An sdx frame is
//
//	Ethernet, at most one 802.1Q or 802.1ad tag
//	IPv4 with any IHL from 5 to 15 (options are skipped), not a fragment
//	    (MF clear and offset 0), total length covering the header and
//	    within the frame
//	UDP to the sdx port, UDP length from 8 to the IP payload length
//
// The lengths (IP total length, UDP length) are checked against the whole
// frame, and every read is bounds-checked against the end of the first
// buffer (data_end): see Frags below.
//
// The port is configuration, not a constant: LoadSteer writes it into the
// program's read-only data before the kernel sees it, so the verifier and
// the JIT treat it as a constant. A different port needs another LoadSteer.
//
// The addresses are configuration too, in a hash map the loader fills
// (AddAddr; xdp.AttachSteer gives it the interface's IPv4 addresses): each
// address of the host with its subnet mask, served or not. An sdx frame is
// the stack's only when its IPv4 destination is a served address; one to
// any other destination (the host's other addresses, a broadcast or
// multicast address, another host's address on a bridge or router) is the
// kernel's, so a kernel socket on the sdx port of another address, or
// bound to the port for broadcasts, keeps working beside a stack. Serving
// AnyAddr (0.0.0.0/0) makes every destination served, for raw test hosts.
//
// A frame to a served address is dropped when its IPv4 source is one that
// nobody may answer: 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/3 (multicast, class
// E and the limited broadcast), the network or broadcast address of the
// served address's subnet (not for a /31 or /32, RFC 3021), or any of the
// host's own addresses. An answer to such a source would go to every host
// on the segment, or to ourselves; a connect request from the subnet
// broadcast address drew an accept and four repeats to ff:ff:ff:ff:ff:ff.
// The program drops them rather than passing them on: the kernel would
// drop them too (martian sources), and dropping here counts them.
//
// One kind of ICMP is steered too: a destination unreachable, code port
// unreachable, to a served address from a source that passes the checks
// above, that quotes an IPv4 header from the ICMP's destination to its
// source and at least a UDP header from the sdx port to the sdx port. That
// is the peer host's kernel saying that the sdx frame we sent found no
// AF_XDP socket there (the peer's stack is gone), and the provider fails
// the connection it names at once instead of after the dead-peer bound. It
// checks the quoted sdx header (ids, ports, token); the program checks
// only the quoted IPv4 and UDP headers, the 8 bytes after the IPv4 header
// that RFC 792 guarantees. Other ICMP (other codes of destination
// unreachable, which RFC 1122 calls soft errors, fragmentation needed,
// time exceeded, echo) goes to the kernel, as before.
//
// Every frame gets one verdict and bumps Seen and exactly one of the
// other counters but Unreach:
//
//	frame                                          verdict       counter
//	sdx frame to a served address, socket          XDP_REDIRECT  Redirected
//	  registered for its queue
//	sdx frame to a served address, no socket for   XDP_PASS      NoSocket
//	  its queue (or the queue is MaxQueues or above)
//	sdx frame to an address not served             XDP_PASS      Foreign
//	sdx frame to a served address from a source    XDP_DROP      Spoofed
//	  nobody may answer (above)
//	ICMP port unreachable about an sdx frame       as an sdx frame; also Unreach
//	well formed but not sdx: other ethertypes      XDP_PASS      Passed
//	  (ARP, IPv6), two VLAN tags, other IP
//	  protocols, other ICMP, fragments, other
//	  UDP ports
//	truncated or inconsistent: Ethernet header,    XDP_PASS      Malformed
//	  tag, IPv4 header, options or UDP header cut
//	  off; IPv4 version not 4; IHL below 5; total
//	  length below the header or beyond the frame;
//	  UDP length below 8 or beyond the IP payload
//	  (checked for the sdx port only)
//
// Passed frames are not modified. Redirected counts what bpf_redirect_map
// accepted: the socket was in the map at that instant. The kernel then
// delivers the frame only to a socket bound to the same device and queue,
// and drops it when the socket's rx ring is full or its fill ring empty;
// those drops show in the socket's XDP_STATISTICS, not here.
//
// The counters live in a per-CPU array, so the program never contends on
// them; Stats sums the CPUs.
//
// # sdx_fault
//
// sdx_fault is a loss injector for tests: it drops sdx frames on the real
// path, so that the provider's retransmission, time-outs and resets are
// exercised by frames that really went missing. A frame is eligible when it
// is an sdx frame by the definition above (the parse is steer.c's, and
// TestFaultParsesLikeSteer runs both programs on the same frames) to the
// configured port and, if opcodes are chosen, its opcode (the byte at offset
// 1 of the UDP payload, docs/PROTOCOL.md) is one of them. An eligible frame
// is dropped with the configured probability, and the next DropNext eligible
// frames are dropped whatever the draw; every other frame passes untouched.
// Every frame bumps Seen and one of Dropped and Passed; an eligible one also
// bumps Eligible.
//
// The settings live in a one-entry array map, not in read-only data, so that
// Configure can change them while the program is attached. Until the first
// Configure, every frame passes. DropNext is decremented under the map
// value's bpf_spin_lock, so a burst drops exactly that many frames however
// many CPUs run the program.
//
// The draws are reproducible, which bpf_get_prandom_u32 is not (it cannot be
// seeded): each CPU has a splitmix64 generator in a per-CPU array, seeded by
// Configure from FaultConfig.Seed (CPU i starts at the (i+1)-th output of
// splitmix64 seeded with Seed). Every eligible frame takes exactly one draw,
// also when a burst decides, and a frame is dropped when the draw's high 32
// bits are below DropRate·2^32. So the fate of the n-th eligible frame a CPU
// sees depends on the seed and n alone, and for one seed a frame dropped at
// a rate is also dropped at any higher rate. Which CPU judges a frame is up
// to the kernel (on veth, the CPU that runs the receiving NAPI poll); the
// per-CPU counters say how many draws each CPU took, and the tests replay
// them with the Go copy of the generator.
//
// Where it runs. The kernel gives an interface one XDP program at a time: on
// Linux 6.18 a second bpf_link in the same mode fails with EBUSY, and one in
// the other mode with EEXIST ("Native and generic XDP can't be active at the
// same time"), so sdx_fault cannot sit beside sdx_steer on an sdx host's
// interface, natively or generically (TestFaultCoexistence). A veth's XDP
// sees only what the veth receives, so the sender's side of the pair is no
// place for it either. Two ways remain: a fault hook inside sdx_steer, or a
// hop between the hosts. sdx uses the hop: a third namespace whose bridge
// joins the two hosts' veth pairs, with sdx_fault attached natively to the
// bridge ports, returning XDP_PASS for the bridge to forward:
//
//	A "a" ==== "ra" [bridge] "rb" ==== "b" B
//	   steer   fault          fault    steer
//
// sdx_fault on "ra" judges what A sends to B, on "rb" what B sends to A; one
// Fault attached to both applies its settings to both directions, two give
// each direction its own. The hosts keep the production sdx_steer and the
// provider's own attach path, unchanged and with exact counters; the loss
// looks to both of them like loss on the wire; the hosts' other traffic
// (ARP, ICMP, TCP, other UDP ports) crosses the same hop and is checked to
// be untouched; and the bridge is invisible (one subnet, the peers' own
// MACs). The price is one namespace, one more veth pair and a bridge, built
// and removed by internal/testbed.Hop, and a bridge traversal in every
// frame's latency, which only the loss benchmarks see. A hook in sdx_steer
// would have needed none of that, but would put test code into the program
// every host runs, and the fault settings into its loader and the xdp
// package's attach path; chaining the two programs with a tail call would
// need the same attach-path changes.
//
// # Duplication and reordering
//
// XDP can neither copy a frame nor hold one back, so sdx_disorder
// (disorder.c, Disorder) is a TC program, attached through a bpf_link at
// tcx egress (Linux 6.6, MinKernelTCX) of a hop's port, where it judges
// what leaves toward the host behind that port. It parses as sdx_fault
// does (pulling a multi-buffer frame's headers into the linear area
// first) and gives each eligible frame one seeded draw, from the same
// per-CPU splitmix64 generators: the high half duplicates the frame with
// DupRate, by bpf_clone_redirect to the same port, and the low half
// delays it with DelayRate, by setting skb->priority to DelayClass. The
// copy runs the program again on its way out; the program marks the frame
// (skb->mark) just before cloning and restores the mark right after, so the
// copy alone carries the mark and passes once, unmarked (Clones). The delay
// is the port's qdisc's work: internal/testbed.Hop.AddDelayClass gives the
// port an htb root whose class 1:2 sends at a rate that holds a full frame
// back for a set time, while every other frame takes htb's unshaped direct
// queue and overtakes it (htb_classify picks a class by skb->priority). The
// kernel these tests run on has no netem and no fq, so neither a per-frame
// delay nor departure times are available; htb is. TestDisorderOnHop
// counts, at the receiver, the copies and the frames overtaken.
//
// # ECN marking
//
// sdx_mark (mark.c, Marker) is an ECN-marking AQM for a test bottleneck
// on a kernel without a marking qdisc: the one these tests run on has tbf,
// htb and the fifos, but no RED, CoDel, FQ-CoDel, PIE or CAKE. It is a TC
// program at tcx egress of the bottleneck port, where it sees every frame
// offered to the port before the port's tbf queues or drops it, and it
// keeps a virtual queue (a phantom queue) that drains at the tbf's rate:
// each frame first drains what the time since the last frame took out at
// that rate, then adds its length if the queue has room under the limit
// (the tbf's buffer; a frame without room counts as Overflow, roughly the
// tbf's drop). An ECT(0) or ECT(1) IPv4 frame that then finds more than
// the threshold queued, itself included, leaves marked CE, with its header
// checksum mended incrementally (bpf_l3_csum_replace); Not-ECT frames,
// frames already CE and frames that are not IPv4 pass untouched, and the
// tbf drops them when its own queue is full. That is DCTCP's marking (RFC
// 8257, section 3.1: mark when the instantaneous queue exceeds K) on an
// estimate of the real queue.
//
// The estimate must allow for the tbf's bucket. A tbf that has been idle
// holds burst bytes of tokens and lets that much through at once; while
// it is busy its bucket stays empty. So the virtual queue, which has no
// tokens, runs burst bytes ahead of the tbf's real queue whenever the
// port is busy: it is the real queue plus the tokens spent. Configure
// takes the burst and has the program compare the virtual queue with the
// threshold plus the burst, and the limit plus the burst. Without that
// (measured with the testbed's 62.5 KB burst at 500 Mbit/s and a 30 KB
// threshold) nearly every frame was marked while the real queue stayed
// short and dropped nothing.
//
// Every CPU that sends through the port updates the one queue, under the
// map value's bpf_spin_lock; the clock (bpf_ktime_get_ns) is read before
// taking it, as no helper may run under it, so a CPU whose stamp is older
// than the last one drains nothing. The backlog is counted in billionths
// of a byte, so that rate times nanoseconds is exact and no rounding
// slows the drain however closely frames follow each other.
//
// TestMarkerThreshold and TestMarkerDrain run crafted frames through
// BPF_PROG_TEST_RUN against a Go model of the queue;
// internal/testbed.Shared attaches a Marker to its bottleneck port for
// the ECN variant.
//
// # Frags
//
// Both programs are frags-aware: their sections are "xdp.frags", so they
// load with BPF_F_XDP_HAS_FRAGS (Linux 5.18, MinKernelFrags), and a
// driver may hand them a frame in several buffers. That is what makes
// native XDP possible on veth at MTUs above a page (measured on 6.18: 9000
// and 65000): a program that is not frags-aware is refused there ("Peer
// MTU is too large to set XDP"), and the attach falls back to generic
// XDP. A frags-aware program may see the headers in the first buffer and
// the rest of the frame in others, so the parse checks lengths against
// the whole frame (bpf_xdp_get_buff_len) while every read stays
// bounds-checked against data_end; a frame whose headers do not fit the
// first buffer is malformed (passed to the kernel). TestFragsAware runs
// a 9000-byte frame, which BPF_PROG_TEST_RUN splits into buffers.
//
// Each object also holds the same program without the flag and the helper
// (sdx_steer_plain, sdx_fault_plain). A kernel that refuses the
// frags-aware program (before 5.18) loads the plain one; FragsErr then
// says why (a *KernelFeatureError). Steer.Programs lists the loaded
// programs in order of preference, and the xdp package's AttachSteer tries
// the frags-aware one before the plain one in each mode, for drivers that
// refuse frags-aware programs, and reports what it settled for
// (Steering.Frags, Steering.Fallback).
//
// # Attaching
//
// Attach attaches a program through a bpf_link in the calling thread's
// network namespace (use sys.InNetns for another), native mode first, generic
// when the driver refuses native; it reports the mode granted. veth supports
// native mode. The link is not pinned, so the program leaves the interface
// when the link is closed or its owner process exits, and no other program
// can replace it meanwhile.
//
// # Kernel
//
// The minimum is Linux 5.9 (MinKernel), for XDP attach through a bpf_link
// (BPF_LINK_CREATE with BPF_XDP). Everything else is older: XDP 4.8,
// AF_XDP and XSKMAP 4.18, read-only global data 5.2, frags-aware programs
// 5.18 (with the plain programs as the fallback), a default action
// in the low bits of bpf_redirect_map's flags 5.3 (before that a non-zero
// flags argument aborts the program), and sdx_fault's bpf_spin_lock in a
// map value with BPF_F_LOCK updates 5.1. A missing feature is reported as a
// *KernelFeatureError, which matches ebpf.ErrNotSupported.
//
// # Regenerating
//
// After changing a C source, run `make generate` (go generate ./bpf) and
// commit the *_bpfel.go and *_bpfel.o files. The compiler is pinned to
// clang-14 and llvm-strip-14 from Debian 12 (apt-get install clang-14 llvm-14),
// and the build reads headers from include/ only (-nostdinc): the Linux UAPI
// definitions in include/uapi.h and libbpf 1.1.2's helper headers in
// include/bpf/. scripts/gen-check.sh regenerates into a temporary copy and
// fails when the committed output differs or generation is not
// deterministic.
package bpf
