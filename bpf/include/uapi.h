/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few Linux UAPI definitions the sdx XDP programs need, restated here
 * so that the build reads nothing from the host's /usr/include and the
 * committed objects do not change with the installed linux-libc-dev.
 * Values and layouts are those of <linux/types.h>, <linux/bpf.h>,
 * <linux/if_ether.h>, <linux/if_vlan.h>, <linux/ip.h>, <linux/in.h>,
 * <linux/udp.h>, <linux/icmp.h> and <linux/pkt_cls.h>; they are kernel ABI and never change.
 *
 * The IPv4 version/IHL byte is one plain byte (ver_ihl) rather than the
 * kernel's endian-dependent bitfields.
 */
#ifndef SDX_UAPI_H
#define SDX_UAPI_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;

typedef __u16 __le16;
typedef __u16 __be16;
typedef __u32 __le32;
typedef __u32 __be32;
typedef __u64 __le64;
typedef __u64 __be64;
typedef __u16 __sum16;
typedef __u32 __wsum;

/* <linux/bpf.h> */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_XSKMAP = 17,
};

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
	XDP_REDIRECT,
};

/*
 * A lock in a map value (fault.c, mark.c). The verifier finds it in BTF by
 * this name, which must not change.
 */
struct bpf_spin_lock {
	__u32 val;
};

/* The context of an XDP program. */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

/*
 * The context of a TC program, as far as data_end: the verifier checks
 * each access by its offset, so a prefix of the layout is enough.
 */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
};

/* <linux/pkt_cls.h> */
#define TC_ACT_OK 0

/* RFC 3168: the ECN field, the low two bits of the IPv4 TOS byte (the names are <net/inet_ecn.h>'s) */
#define INET_ECN_MASK 3
#define INET_ECN_NOT_ECT 0
#define INET_ECN_CE 3

/* <linux/if_ether.h> */
#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

struct ethhdr {
	unsigned char h_dest[ETH_ALEN];
	unsigned char h_source[ETH_ALEN];
	__be16 h_proto;
}; /* 14 bytes, 2-aligned: the kernel's packed attribute changes nothing */

/* <linux/if_vlan.h> (kernel-internal there; the wire layout of a tag) */
struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

/* <linux/in.h> */
#define IPPROTO_ICMP 1
#define IPPROTO_UDP 17

/* <linux/ip.h> */
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct iphdr {
	__u8 ver_ihl; /* version in the high nibble, IHL in the low one */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

/* <linux/udp.h> */
struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

/* <linux/icmp.h> */
#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 un; /* unused in a destination unreachable */
};

#endif /* SDX_UAPI_H */
