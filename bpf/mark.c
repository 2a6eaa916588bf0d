//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// sdx_mark is an ECN-marking AQM for a test bottleneck, for kernels that
// have no marking qdisc (RED, CoDel, PIE). It runs at tcx egress of the
// bottleneck port, in front of the port's tbf, and keeps a virtual queue
// (a "phantom queue") drained at the tbf's rate: every frame adds its
// length, and an ECN-capable IPv4 frame that finds more than the threshold
// queued, itself included, leaves marked CE. That is DCTCP's step marking
// (RFC 8257, section 3.1) on an estimate of the real queue. Not-ECT frames
// pass untouched: the tbf drops them when its own queue is full.

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define NSEC_PER_SEC 1000000000ULL

// The configuration, written from Go. Configure resets the queue with it.
// The threshold and the limit include the tbf's burst: the virtual queue
// counts the tokens a tbf has spent as well as its queue (see doc.go).
struct config {
	__u64 rate;      // bytes a second the queue drains; 0: every frame passes uncounted
	__u32 threshold; // mark an ECN-capable frame that finds more than this many bytes queued
	__u32 limit;     // the queue holds at most this many bytes
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

// The virtual queue, shared by every CPU that sends through the port. The
// backlog is kept in billionths of a byte, so that the drain of any
// interval, rate times nanoseconds, is exact: nothing is lost to rounding
// however short the gaps between frames.
struct vqueue {
	struct bpf_spin_lock lock; // guards the rest
	__u64 last_ns;             // when the backlog was last drained
	__u64 backlog;             // bytes queued, times NSEC_PER_SEC
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vqueue);
} queue SEC(".maps");

// Counters of sdx_mark, one set per CPU. Every run adds one to seen; one
// that finds the queue above the threshold adds one to over, and then to
// marked if the frame was ECN-capable and not yet CE; one that did not fit
// under the limit adds one to overflow.
struct counters {
	__u64 seen;     // frames the program ran on
	__u64 over;     // frames that found more than the threshold queued
	__u64 marked;   // of those, ECT(0) or ECT(1) frames set to CE
	__u64 overflow; // frames the virtual queue had no room for (the tbf's drops, roughly)
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

// enqueue drains q to now at rate, adds len bytes if they fit under limit,
// and reports 1 if the backlog is then above threshold, 2 if it is and the
// frame did not fit, 0 if it is not. Called with q's lock held: no helpers.
static __always_inline int enqueue(struct vqueue *q, __u64 now, __u32 len, __u64 rate, __u32 threshold,
				   __u32 limit)
{
	// Another CPU may have stamped a later time than ours: no drain then.
	if (now > q->last_ns) {
		__u64 dt = now - q->last_ns;
		q->last_ns = now;
		// dt > backlog/rate also keeps dt*rate from overflowing.
		if (dt > q->backlog / rate)
			q->backlog = 0;
		else
			q->backlog -= dt * rate;
	}
	__u64 size = (__u64)len * NSEC_PER_SEC;
	int fits = q->backlog + size <= (__u64)limit * NSEC_PER_SEC;
	if (fits)
		q->backlog += size;
	if (q->backlog <= (__u64)threshold * NSEC_PER_SEC)
		return 0;
	return fits ? 1 : 2;
}

// mark sets an ECN-capable IPv4 frame's ECN field to CE and mends the
// header checksum, and reports whether it did. The IPv4 header follows
// the Ethernet header, or one 802.1Q or 802.1ad tag; any other frame, a
// Not-ECT or already CE one, is left as it is.
static __always_inline int mark(struct __sk_buff *skb)
{
	__u32 off = sizeof(struct ethhdr);
	__be16 proto;
	if (bpf_skb_load_bytes(skb, off - sizeof(proto), &proto, sizeof(proto)) < 0)
		return 0;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		off += sizeof(struct vlan_hdr);
		if (bpf_skb_load_bytes(skb, off - sizeof(proto), &proto, sizeof(proto)) < 0)
			return 0;
	}
	struct iphdr ip;
	if (proto != bpf_htons(ETH_P_IP) || bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.ver_ihl >> 4 != 4 || (ip.ver_ihl & 0xf) < 5)
		return 0;
	__u8 ecn = ip.tos & INET_ECN_MASK;
	if (ecn == INET_ECN_NOT_ECT || ecn == INET_ECN_CE)
		return 0;

	// The checksum covers TOS as the low byte of the header's first word.
	__u8 tos = ip.tos | INET_ECN_CE;
	__be16 old = bpf_htons((__u16)ip.ver_ihl << 8 | ip.tos);
	__be16 new = bpf_htons((__u16)ip.ver_ihl << 8 | tos);
	if (bpf_l3_csum_replace(skb, off + __builtin_offsetof(struct iphdr, check), old, new, sizeof(new)) < 0)
		return 0;
	return bpf_skb_store_bytes(skb, off + __builtin_offsetof(struct iphdr, tos), &tos, sizeof(tos), 0) == 0;
}

SEC("tc")
int sdx_mark(struct __sk_buff *skb)
{
	__u32 zero = 0;

	// Never NULL for one-entry arrays; if one were, every frame passes.
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct vqueue *q = bpf_map_lookup_elem(&queue, &zero);
	if (!st || !cfg || !q)
		return TC_ACT_OK;
	st->seen++;

	__u64 rate = cfg->rate;
	__u32 threshold = cfg->threshold, limit = cfg->limit;
	if (rate == 0)
		return TC_ACT_OK;
	// The clock is read before the lock: no helper may run under it.
	__u64 now = bpf_ktime_get_ns();
	bpf_spin_lock(&q->lock);
	int over = enqueue(q, now, skb->len, rate, threshold, limit);
	bpf_spin_unlock(&q->lock);

	if (over == 0)
		return TC_ACT_OK;
	st->over++;
	if (over == 2)
		st->overflow++;
	if (mark(skb))
		st->marked++;
	return TC_ACT_OK;
}
