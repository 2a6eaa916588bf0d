//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// sdx_disorder duplicates and delays sdx frames on purpose, for tests. It
// runs at tcx egress of a hop's port (see doc.go, "Duplication and
// reordering"): for each frame to the configured UDP port whose opcode is
// chosen it draws from a seeded per-CPU generator and
//   - with one probability sends a copy out of the same port at once
//     (bpf_clone_redirect), and
//   - with another sets skb->priority to the configured class, which the
//     port's htb qdisc holds back behind a slow rate, so that later frames
//     overtake it.
// Every other frame passes untouched.

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sdx_parse.h"
#include "sdx_draw.h"

char __license[] SEC("license") = "Dual BSD/GPL";

// The most a parse reads from the start of a frame: Ethernet, one VLAN
// tag, IPv4 with options, UDP and the opcode.
#define SDX_HEAD_MAX (14 + 4 + 60 + 8 + SDX_OPCODE_OFF + 1)

// CLONE_MARK marks the copy bpf_clone_redirect makes: the copy goes out
// through the same port's egress, runs this program again, and must pass
// once, unduplicated. The program sets it on the frame just before the
// clone (which copies it) and restores the frame's own mark right after.
#define CLONE_MARK 0x5d0c1013

// The configuration, written from Go while the program may be running; a
// run that races with an update may see some fields old and some new,
// which is harmless here.
struct config {
	__u64 dup_threshold;   // duplicate when the draw's high 32 bits are below: 0 never, 1<<32 always
	__u64 delay_threshold; // delay when the draw's low 32 bits are below
	__u32 delay_class;     // skb->priority of a delayed frame: an htb class handle (major<<16 | minor)
	__u32 opcodes;         // bit N: frames with opcode N are eligible; 0: every frame to port
	__u16 port;            // sdx UDP port, host byte order; 0: nothing is eligible
	__u16 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

// Counters of sdx_disorder, one set per CPU. Every run adds one to seen
// and to exactly one of clones and judged; a judged frame that is eligible
// adds one to eligible, and then to duplicated or dup_failed if its draw
// asked for a copy, and to delayed if it asked for a delay.
struct counters {
	__u64 seen;       // frames the program ran on
	__u64 clones;     // copies it made itself, passed once
	__u64 judged;     // every other frame
	__u64 eligible;   // sdx frames to the port with a chosen opcode: one draw each
	__u64 duplicated; // eligible frames sent out twice
	__u64 dup_failed; // eligible frames whose copy the kernel refused
	__u64 delayed;    // eligible frames put in the delay class
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

// eligible reports whether skb is an sdx frame to port whose opcode is in
// the mask (0: every sdx frame to port), by sdx_steer's parse. A frame of
// several buffers may have only part of its headers in the linear area,
// where data and data_end point; they are pulled in first.
static __always_inline int eligible(struct __sk_buff *skb, __u16 port, __u32 mask)
{
	if (port == 0)
		return 0;
	__u32 len = skb->len;
	if (skb->data_end - skb->data < SDX_HEAD_MAX && skb->data_end - skb->data < len)
		bpf_skb_pull_data(skb, len < SDX_HEAD_MAX ? len : SDX_HEAD_MAX);

	return sdx_chosen((void *)(long)skb->data, (void *)(long)skb->data_end, len, port, mask);
}

SEC("tc")
int sdx_disorder(struct __sk_buff *skb)
{
	__u32 zero = 0;

	// Never NULL for one-entry arrays; if one were, every frame passes.
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct rng_state *r = bpf_map_lookup_elem(&rng, &zero);
	if (!st || !cfg || !r)
		return TC_ACT_OK;
	st->seen++;

	if (skb->mark == CLONE_MARK) {
		skb->mark = 0;
		st->clones++;
		return TC_ACT_OK;
	}
	st->judged++;
	if (!eligible(skb, cfg->port, cfg->opcodes))
		return TC_ACT_OK;
	st->eligible++;

	// One draw per eligible frame: the high half decides the copy, the
	// low half the delay, so the fate of the n-th eligible frame on a CPU
	// depends on the seed and n alone.
	__u64 draw = splitmix64(&r->state);
	__u32 delay_class = cfg->delay_class;
	int delay = delay_class != 0 && (draw & 0xffffffff) < cfg->delay_threshold;

	if ((draw >> 32) < cfg->dup_threshold) {
		// The copy leaves first, with the frame's priority as it came: it
		// is not delayed, and the frame itself may be.
		__u32 mark = skb->mark;
		skb->mark = CLONE_MARK;
		if (bpf_clone_redirect(skb, skb->ifindex, 0) == 0)
			st->duplicated++;
		else
			st->dup_failed++;
		skb->mark = mark;
	}
	if (delay) {
		skb->priority = delay_class;
		st->delayed++;
	}
	return TC_ACT_OK;
}
