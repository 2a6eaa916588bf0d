// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// What the fault-injection programs (fault.c, disorder.c) share: the seeded
// per-CPU generator that draws their decisions, and the choice of the sdx
// frames they act on. Included by those programs only: it defines a map.

#ifndef SDX_DRAW_H
#define SDX_DRAW_H

#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include "sdx_parse.h"

// The offset of the opcode in the sdx header, from the start of the UDP
// payload (docs/PROTOCOL.md, "sdx header").
#define SDX_OPCODE_OFF 1

// The generator of one CPU: a splitmix64 state, seeded from Go.
struct rng_state {
	__u64 state;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rng_state);
} rng SEC(".maps");

// splitmix64 advances *state and returns its next output (Steele, Lea and
// Flood, "Fast splittable pseudorandom number generators", 2014). fault.go
// has the same function for seeding and for the tests.
static __always_inline __u64 splitmix64(__u64 *state)
{
	__u64 z = (*state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

// sdx_chosen reports whether the frame in [data, data_end), pkt_len bytes
// long in all (0: data_end is its end), is an sdx frame to port whose
// opcode is in the mask; a mask of 0 takes every sdx frame to port, with
// an opcode or without. The parse is sdx_steer's (sdx_parse.h), so the
// frames chosen are exactly those sdx_steer calls sdx frames.
static __always_inline int sdx_chosen(void *data, void *data_end, __u32 pkt_len, __u16 port, __u32 mask)
{
	if (port == 0)
		return 0;
	struct udphdr *udp;
	__u32 udp_len;
	if (sdx_classify(data, data_end, pkt_len, port, &udp, &udp_len) != SDX_CLASS_SDX)
		return 0;

	if (mask == 0)
		return 1;
	// A datagram too short to hold an opcode has none to choose.
	__u8 *op = (__u8 *)(udp + 1) + SDX_OPCODE_OFF;
	if ((void *)(op + 1) > data_end || udp_len < sizeof(*udp) + SDX_OPCODE_OFF + 1)
		return 0;
	if (*op >= 32)
		return 0;
	return (mask >> *op) & 1;
}

#endif
