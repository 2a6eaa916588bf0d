//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// sdx_steer hands sdx frames (Ethernet, at most one 802.1Q/802.1ad tag,
// unfragmented IPv4, UDP to the sdx port of an address the stack serves)
// and ICMP port unreachables about them to the AF_XDP socket registered
// for the frame's rx queue, drops those from sources nobody may answer,
// and hands every other frame to the kernel untouched. See doc.go for the
// verdicts and counters.

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sdx_parse.h"
#include "sdx_host.h"

char __license[] SEC("license") = "Dual BSD/GPL";

// The UDP destination port of sdx frames, in host byte order. It lives in
// .rodata and is set from Go before load; the map is frozen, so the verifier
// and the JIT see a constant.
volatile const __u16 sdx_port = 0;

// AF_XDP sockets by rx queue index.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Counters of sdx_steer, one set per CPU. Every run adds one to seen and
// one to exactly one of redirected, nosocket, passed, malformed, foreign
// and spoofed.
struct counters {
	__u64 seen;       // frames the program ran on
	__u64 redirected; // sdx frames handed to a registered socket
	__u64 nosocket;   // sdx frames with no socket on their queue: passed
	__u64 passed;     // well-formed frames that are not sdx frames: passed
	__u64 malformed;  // truncated or bad headers: passed
	__u64 foreign;    // UDP to the sdx port of an address not served: passed
	__u64 spoofed;    // to a served address from a source nobody may answer: dropped
	__u64 unreach;    // ICMP port unreachables about sdx frames, of redirected and nosocket
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

// steer is the program; frags says whether it runs frags-aware (see the
// two entry points at the end).
static __always_inline int steer(struct xdp_md *ctx, int frags)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	// Never NULL for a one-entry array; if it were, steering goes on
	// uncounted.
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	if (st)
		st->seen++;

	struct udphdr *udp;
	__u32 udp_len;
	__u32 pkt_len = frags ? bpf_xdp_get_buff_len(ctx) : 0;
	switch (sdx_classify(data, data_end, pkt_len, sdx_port, &udp, &udp_len)) {
	case SDX_CLASS_MALFORMED:
		if (st)
			st->malformed++;
		return XDP_PASS;
	case SDX_CLASS_OTHER: {
		// An ICMP port unreachable about an sdx frame we sent: the
		// peer's stack is gone. It goes to the socket like an sdx frame.
		struct iphdr *ip = sdx_ipv4(data, data_end);
		if (ip && sdx_icmp_unreach(ip, (ip->ver_ihl & 0x0f) * 4, data_end, sdx_port)) {
			enum sdx_host_class c = sdx_host_check(ip);
			if (c == SDX_HOST_SERVED) {
				if (st)
					st->unreach++;
				break;
			}
			if (c == SDX_HOST_SPOOFED) {
				if (st)
					st->spoofed++;
				return XDP_DROP;
			}
		}
		if (st)
			st->passed++;
		return XDP_PASS;
	}
	case SDX_CLASS_SDX: {
		struct iphdr *ip = sdx_ipv4(data, data_end);
		enum sdx_host_class c = ip ? sdx_host_check(ip) : SDX_HOST_FOREIGN;
		if (c == SDX_HOST_FOREIGN) {
			if (st)
				st->foreign++;
			return XDP_PASS;
		}
		if (c == SDX_HOST_SPOOFED) {
			if (st)
				st->spoofed++;
			return XDP_DROP;
		}
		break;
	}
	}

	// bpf_redirect_map looks the queue up in xsks itself and returns
	// XDP_REDIRECT when a socket is registered there, else the XDP_PASS
	// given as the default. Counting on that answer, rather than on a
	// separate bpf_map_lookup_elem before it, keeps the counter truthful
	// even when a socket is unregistered between the two lookups.
	long action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (st) {
		if (action == XDP_REDIRECT)
			st->redirected++;
		else
			st->nosocket++;
	}
	return action;
}

// sdx_steer is frags-aware (BPF_F_XDP_HAS_FRAGS, Linux 5.18): a driver may
// hand it a frame in several buffers, so veth and other drivers accept it
// in native mode at MTUs above a page. sdx_steer_plain is the same program
// without bpf_xdp_get_buff_len and the flag, for older kernels and for
// drivers that refuse frags-aware programs; the loader picks (steer.go).
SEC("xdp.frags")
int sdx_steer(struct xdp_md *ctx)
{
	return steer(ctx, 1);
}

SEC("xdp")
int sdx_steer_plain(struct xdp_md *ctx)
{
	return steer(ctx, 0);
}
