// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The one parse of an sdx frame that every XDP program of sdx shares, so
// that steering and fault injection agree on which frames are sdx frames.

#ifndef SDX_PARSE_H
#define SDX_PARSE_H

#include "uapi.h"
#include <bpf/bpf_endian.h>

enum sdx_class {
	SDX_CLASS_OTHER,     // well formed, not an sdx frame
	SDX_CLASS_MALFORMED, // truncated or bad headers
	SDX_CLASS_SDX,       // an sdx frame
};

// sdx_classify parses the frame that starts at data: Ethernet with at most
// one 802.1Q/802.1ad tag, IPv4 (options allowed, fragments not), UDP to
// port. For an sdx frame it sets *udp_out and *udp_len_out. Every read is
// preceded by a bounds check against data_end, the end of the linear part.
// pkt_len is the whole frame's length, frags included
// (bpf_xdp_get_buff_len), for a frags-aware program; 0 means the frame is
// [data, data_end) alone. Lengths are checked against the whole frame: a
// multi-buffer frame's IP payload may lie beyond data_end.
static __always_inline enum sdx_class sdx_classify(void *data, void *data_end, __u32 pkt_len, __u16 port,
						     struct udphdr **udp_out, __u32 *udp_len_out)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return SDX_CLASS_MALFORMED;

	void *l3 = eth + 1;
	__u32 l3_off = sizeof(*eth); // a scalar: pointer differences need CAP_PERFMON
	__be16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return SDX_CLASS_MALFORMED;
		proto = vlan->h_vlan_encapsulated_proto;
		l3 = vlan + 1;
		l3_off += sizeof(*vlan);
	}
	// A second tag (QinQ) lands here too: sdx frames carry at most one.
	if (proto != bpf_htons(ETH_P_IP))
		return SDX_CLASS_OTHER;

	// The IPv4 header: fixed part, version, IHL, options, total length.
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return SDX_CLASS_MALFORMED;
	if ((ip->ver_ihl >> 4) != 4)
		return SDX_CLASS_MALFORMED;
	__u32 hlen = (ip->ver_ihl & 0x0f) * 4;
	if (hlen < sizeof(*ip))
		return SDX_CLASS_MALFORMED;
	if ((void *)ip + hlen > data_end)
		return SDX_CLASS_MALFORMED;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < hlen)
		return SDX_CLASS_MALFORMED;
	if (pkt_len ? l3_off + tot_len > pkt_len : (void *)ip + tot_len > data_end)
		return SDX_CLASS_MALFORMED;

	if (ip->protocol != IPPROTO_UDP)
		return SDX_CLASS_OTHER;
	// Only whole datagrams are sdx frames; the kernel reassembles the rest.
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return SDX_CLASS_OTHER;

	struct udphdr *udp = (void *)ip + hlen;
	if ((void *)(udp + 1) > data_end || tot_len - hlen < sizeof(*udp))
		return SDX_CLASS_MALFORMED;
	if (udp->dest != bpf_htons(port))
		return SDX_CLASS_OTHER;
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) || udp_len > tot_len - hlen)
		return SDX_CLASS_MALFORMED;
	*udp_out = udp;
	*udp_len_out = udp_len;
	return SDX_CLASS_SDX;
}

#endif
