// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// What sdx_steer knows about its host: the IPv4 addresses it serves and the
// host's other addresses, and the checks built on them (see doc.go): an sdx
// frame is steered only when it is addressed to a served address and comes
// from a source that can be answered; an ICMP error is steered when it says
// that an sdx frame we sent found nobody at its destination. Included by
// steer.c only: it defines a map.

#ifndef SDX_HOST_H
#define SDX_HOST_H

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// An address of the host, by value in the addrs map.
struct sdx_addr {
	__be32 mask; // its subnet's mask: the prefix's network and broadcast addresses
	__u8 serve;  // 1: frames to it are the stack's; 0: the kernel's, but never a source
	__u8 pad[3];
};

// The host's IPv4 addresses (network byte order), filled by the loader.
// The key 0.0.0.0 with serve set makes every destination served (a raw test
// host that reads other hosts' frames).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __be32);
	__type(value, struct sdx_addr);
} addrs SEC(".maps");

enum sdx_host_class {
	SDX_HOST_SERVED,  // to a served address from a usable source
	SDX_HOST_FOREIGN, // not to a served address: the kernel's
	SDX_HOST_SPOOFED, // to a served address from a source nobody may answer
};

// sdx_host_check classifies an IPv4 header whose fixed part is within the
// frame. A source is spoofed when it is 0.0.0.0/8, loopback, multicast or
// above (224.0.0.0/3, which holds the limited broadcast), the network or
// broadcast address of the served address's subnet, or one of the host's
// own addresses. Answering such a source would send to everyone on the
// segment, or to ourselves.
static __always_inline enum sdx_host_class sdx_host_check(struct iphdr *ip)
{
	__be32 dst = ip->daddr;
	struct sdx_addr *a = bpf_map_lookup_elem(&addrs, &dst);
	if (!a || !a->serve) {
		__be32 any = 0;
		a = bpf_map_lookup_elem(&addrs, &any);
		if (!a || !a->serve)
			return SDX_HOST_FOREIGN;
	}
	__u32 src = bpf_ntohl(ip->saddr);
	__u8 first = src >> 24;
	if (first == 0 || first == 127 || first >= 224)
		return SDX_HOST_SPOOFED;
	__u32 mask = bpf_ntohl(a->mask);
	// A /31 or /32 has no network or broadcast address (RFC 3021).
	if (mask < 0xfffffffe && ((src ^ bpf_ntohl(dst)) & mask) == 0) {
		__u32 host = src & ~mask;
		if (host == 0 || host == ~mask)
			return SDX_HOST_SPOOFED;
	}
	__be32 s = ip->saddr;
	if (bpf_map_lookup_elem(&addrs, &s))
		return SDX_HOST_SPOOFED;
	return SDX_HOST_SERVED;
}

// SDX_SRC_PORT_MIN is the lowest UDP source port of sdx frames: each
// connection sends from its own port in [SDX_SRC_PORT_MIN, 65535]
// (provider.SrcPortMin), older stacks from the sdx port itself.
#define SDX_SRC_PORT_MIN 49152

// sdx_icmp_unreach reports whether ip, whose header (hlen bytes) is within
// the frame, is an ICMP port unreachable that quotes an sdx frame from us:
// the quoted IPv4 header from ip's destination to ip's source, then at
// least the UDP header, from port or a port of SDX_SRC_PORT_MIN and up, to
// port. Only the destination host
// itself sends a port unreachable, so its source is the quoted
// destination. The provider checks the quoted sdx header.
static __always_inline int sdx_icmp_unreach(struct iphdr *ip, __u32 hlen, void *data_end, __u16 port)
{
	if (ip->protocol != IPPROTO_ICMP || ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	struct icmphdr *icmp = (void *)ip + hlen;
	if ((void *)(icmp + 1) > data_end)
		return 0;
	if (icmp->type != ICMP_DEST_UNREACH || icmp->code != ICMP_PORT_UNREACH)
		return 0;
	struct iphdr *q = (void *)(icmp + 1);
	if ((void *)(q + 1) > data_end)
		return 0;
	if ((q->ver_ihl >> 4) != 4 || q->protocol != IPPROTO_UDP)
		return 0;
	__u32 qhlen = (q->ver_ihl & 0x0f) * 4;
	if (qhlen < sizeof(*q))
		return 0;
	struct udphdr *u = (void *)q + qhlen;
	if ((void *)(u + 1) > data_end)
		return 0;
	__u16 sport = bpf_ntohs(u->source);
	return q->saddr == ip->daddr && q->daddr == ip->saddr && (sport == port || sport >= SDX_SRC_PORT_MIN) &&
	       u->dest == bpf_htons(port);
}

// sdx_ipv4 returns the IPv4 header of a frame that sdx_classify found well
// formed (Ethernet, at most one tag, IPv4), or NULL for any other frame.
static __always_inline struct iphdr *sdx_ipv4(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return NULL;
	void *l3 = eth + 1;
	__be16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return NULL;
		proto = vlan->h_vlan_encapsulated_proto;
		l3 = vlan + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return NULL;
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return NULL;
	return ip;
}

#endif
