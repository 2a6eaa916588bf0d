// Package ring provides lock-free, bounded, power-of-two rings for handing
// items between goroutines without locks, syscalls or allocation.
//
// Three layers:
//
//   - Prod and Cons are cursors over a producer index and a consumer index
//     that may live in memory we do not own, such as an AF_XDP ring mapped
//     from the kernel. They follow libxdp's xsk.h: both indices are
//     free-running uint32 counters, the ring size is a power of two, and a
//     slot is idx & mask. The cursors track positions only; the caller owns
//     the slot array.
//   - SPSC is a single-producer, single-consumer ring built on Prod and Cons
//     over its own indices.
//   - MPSC is a multi-producer, single-consumer ring after Vyukov's bounded
//     queue: producers claim positions with a compare-and-swap and publish
//     them through per-slot sequence numbers, so each producer fills and
//     submits its slots independently of the others.
//
// # Verbs
//
// Producers Reserve slots, fill them through At, and Submit them. Consumers
// Peek at filled slots, read them through At, and Release them; Cancel
// gives back slots that were reserved (or peeked) but not submitted (or
// released). Reservations and peeks accumulate: Submit(n) publishes the
// oldest n reserved slots, Release(n) frees the oldest n peeked ones.
// Push and Pop are one-item conveniences on top of these verbs.
//
// No call blocks. A full ring makes Reserve and Push return nothing and an
// empty one makes Peek and Pop return nothing; the caller decides whether
// to retry, yield or drop.
//
// # Ordering
//
// Indices and sequence numbers are accessed only through sync/atomic, so by
// the Go memory model every write to a slot made before Submit happens
// before the consumer's read of it after Peek, and every read before
// Release happens before the producer's next write to that slot. Items come
// out in the order they were submitted; in an MPSC ring that holds per
// producer, while items from different producers interleave in the order
// their slots were claimed.
//
// # Ownership
//
// Each side of a ring belongs to one goroutine: the producer side of an SPSC
// ring, and the consumer side of both rings, must each be driven by a single
// goroutine at a time (hand-over needs a happens-before edge such as a
// channel send). Any number of goroutines may produce into an MPSC ring. Len
// and Cap may be called from anywhere. The cursor state is plain memory, so
// concurrent use of one side is reported by the race detector; count misuse
// (submitting, releasing or cancelling more than was reserved or peeked) is
// a bug and panics.
package ring
