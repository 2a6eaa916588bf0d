// Package bpf holds sdx's XDP programs and their loaders. The programs are
// written in C (steer.c), compiled by bpf2go into steer_bpfel.o and
// steer_bpfel.go, which are committed. There is no socket logic here: the xdp
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
// The port is configuration, not a constant: LoadSteer writes it into the
// program's read-only data before the kernel sees it, so the verifier and
// the JIT treat it as a constant. A different port needs another LoadSteer.
//
// Every frame gets one verdict and bumps Seen and exactly one other counter:
//
//	frame                                          verdict       counter
//	sdx frame, socket registered for its queue     XDP_REDIRECT  Redirected
//	sdx frame, no socket for its queue (or the     XDP_PASS      NoSocket
//	  queue is MaxQueues or above)
//	well formed but not sdx: other ethertypes      XDP_PASS      Passed
//	  (ARP, IPv6), two VLAN tags, other IP
//	  protocols, fragments, other UDP ports
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
// # Attaching
//
// Attach attaches a program through a bpf_link in the calling thread's
// network namespace (use netns.Do for another), native mode first, generic
// when the driver refuses native; it reports the mode granted. veth supports
// native mode. The link is not pinned, so the program leaves the interface
// when the link is closed or its owner process exits, and no other program
// can replace it meanwhile.
//
// # Kernel
//
// The minimum is Linux 5.9 (MinKernel), for XDP attach through a bpf_link
// (BPF_LINK_CREATE with BPF_XDP). Everything else is older: XDP 4.8,
// AF_XDP and XSKMAP 4.18, read-only global data 5.2, and a default action
// in the low bits of bpf_redirect_map's flags 5.3 (before that a non-zero
// flags argument aborts the program). A missing feature is reported as a
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
