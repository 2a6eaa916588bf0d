//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// sdx_fault drops sdx frames on purpose, for tests: frames to the
// configured UDP port whose opcode is chosen are dropped with a configured
// probability, decided by a seeded per-CPU generator, or unconditionally
// for a configured number of frames. Every other frame passes untouched.
// It runs on a hop between two sdx hosts, not beside sdx_steer: see doc.go.

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sdx_parse.h"
#include "sdx_draw.h"

char __license[] SEC("license") = "Dual BSD/GPL";

// <linux/bpf.h> definitions beyond those include/uapi.h restates for
// steer.c. The map type gets a name of its own so that it cannot clash with
// BPF_MAP_TYPE_ARRAY should uapi.h ever list it.
#define FAULT_MAP_TYPE_ARRAY 2 // BPF_MAP_TYPE_ARRAY

// The configuration, written from Go while the program may be running.
// Only drop_next is read under the lock; a run that races with an update
// may see some fields old and some new, which is harmless here.
struct config {
	struct bpf_spin_lock lock; // guards drop_next
	__u32 drop_next;           // drop the next drop_next eligible frames whatever the draw
	__u64 threshold;           // drop when the draw's high 32 bits are below: 0 never, 1<<32 always
	__u32 opcodes;             // bit N: frames with opcode N are eligible; 0: every frame to port
	__u16 port;                // sdx UDP port, host byte order; 0: nothing is eligible
	__u16 _pad;
};

struct {
	__uint(type, FAULT_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

// Counters of sdx_fault, one set per CPU. Every run adds one to seen and
// one to exactly one of dropped and passed; an eligible frame also adds one
// to eligible.
struct counters {
	__u64 seen;     // frames the program ran on
	__u64 eligible; // sdx frames to the port with a chosen opcode: one draw each
	__u64 dropped;  // eligible frames dropped
	__u64 passed;   // every other frame, eligible or not: passed
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

// fault is the program; frags says whether it runs frags-aware (see the
// two entry points at the end).
static __always_inline int fault(struct xdp_md *ctx, int frags)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	// Never NULL for one-entry arrays; if one were, every frame passes.
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct rng_state *r = bpf_map_lookup_elem(&rng, &zero);
	if (!st || !cfg || !r)
		return XDP_PASS;
	st->seen++;

	__u32 pkt_len = frags ? bpf_xdp_get_buff_len(ctx) : 0;
	if (!sdx_chosen(data, data_end, pkt_len, cfg->port, cfg->opcodes)) {
		st->passed++;
		return XDP_PASS;
	}
	st->eligible++;

	// Every eligible frame takes one draw, also when drop_next decides, so
	// the fate the rate gives the n-th eligible frame on a CPU depends on
	// the seed and n alone.
	int drop = (splitmix64(&r->state) >> 32) < cfg->threshold;

	// Unlocked peek first: the lock is taken only while a burst is armed.
	if (cfg->drop_next) {
		bpf_spin_lock(&cfg->lock);
		if (cfg->drop_next) {
			cfg->drop_next--;
			drop = 1;
		}
		bpf_spin_unlock(&cfg->lock);
	}

	if (drop) {
		st->dropped++;
		return XDP_DROP;
	}
	st->passed++;
	return XDP_PASS;
}

// As in steer.c: sdx_fault is frags-aware (Linux 5.18), sdx_fault_plain
// the same program for kernels without frags support.
SEC("xdp.frags")
int sdx_fault(struct xdp_md *ctx)
{
	return fault(ctx, 1);
}

SEC("xdp")
int sdx_fault_plain(struct xdp_md *ctx)
{
	return fault(ctx, 0);
}
