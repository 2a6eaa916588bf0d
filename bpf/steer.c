//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// sdx_steer hands sdx frames (Ethernet, at most one 802.1Q/802.1ad tag,
// unfragmented IPv4, UDP to the sdx port) to the AF_XDP socket registered
// for the frame's rx queue, and every other frame to the kernel untouched.
// See doc.go for the verdicts and counters.

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

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
// one to exactly one of the other four.
struct counters {
	__u64 seen;       // frames the program ran on
	__u64 redirected; // sdx frames handed to a registered socket
	__u64 nosocket;   // sdx frames with no socket on their queue: passed
	__u64 passed;     // well-formed frames that are not sdx frames: passed
	__u64 malformed;  // truncated or bad headers: passed
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

enum class {
	CLASS_OTHER,     // well formed, not an sdx frame
	CLASS_MALFORMED, // truncated or bad headers
	CLASS_SDX,       // an sdx frame
};

// classify parses the frame in [data, data_end). Every read is preceded by a
// bounds check against data_end.
static __always_inline enum class classify(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return CLASS_MALFORMED;

	void *l3 = eth + 1;
	__be16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return CLASS_MALFORMED;
		proto = vlan->h_vlan_encapsulated_proto;
		l3 = vlan + 1;
	}
	// A second tag (QinQ) lands here too: sdx frames carry at most one.
	if (proto != bpf_htons(ETH_P_IP))
		return CLASS_OTHER;

	// The IPv4 header: fixed part, version, IHL, options, total length.
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return CLASS_MALFORMED;
	if ((ip->ver_ihl >> 4) != 4)
		return CLASS_MALFORMED;
	__u32 hlen = (ip->ver_ihl & 0x0f) * 4;
	if (hlen < sizeof(*ip))
		return CLASS_MALFORMED;
	if ((void *)ip + hlen > data_end)
		return CLASS_MALFORMED;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < hlen || (void *)ip + tot_len > data_end)
		return CLASS_MALFORMED;

	if (ip->protocol != IPPROTO_UDP)
		return CLASS_OTHER;
	// Only whole datagrams are sdx frames; the kernel reassembles the rest.
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return CLASS_OTHER;

	struct udphdr *udp = (void *)ip + hlen;
	if ((void *)(udp + 1) > data_end || tot_len - hlen < sizeof(*udp))
		return CLASS_MALFORMED;
	if (udp->dest != bpf_htons(sdx_port))
		return CLASS_OTHER;
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) || udp_len > tot_len - hlen)
		return CLASS_MALFORMED;
	return CLASS_SDX;
}

SEC("xdp")
int sdx_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	// Never NULL for a one-entry array; if it were, steering goes on
	// uncounted.
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	if (st)
		st->seen++;

	switch (classify(data, data_end)) {
	case CLASS_MALFORMED:
		if (st)
			st->malformed++;
		return XDP_PASS;
	case CLASS_OTHER:
		if (st)
			st->passed++;
		return XDP_PASS;
	case CLASS_SDX:
		break;
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
