package xdplink

import (
	"encoding/binary"
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

// flowKey names a connection's flow at the link: the peer's address and
// the sdx ports of the two sockets (in the sdx header), ours first.
type flowKey uint64

// flowOf returns the flow of an sdx datagram to or from peer, and its
// hash. received says which way it went: the header's src port is ours
// on the way out, the peer's on the way in. A datagram too short for the
// ports (the engine drops it) has ports 0.
func flowOf(peer netip.Addr, datagram []byte, received bool) (flowKey, uint32) {
	src, dst, _ := wire.Ports(datagram)
	local, remote := src, dst
	if received {
		local, remote = dst, src
	}
	return flowFor(peer, local, remote)
}

// flowFor is flowOf for the connection from local port local to peer's
// port remote.
func flowFor(peer netip.Addr, local, remote uint16) (flowKey, uint32) {
	a := peer.As4()
	k := flowKey(binary.BigEndian.Uint32(a[:]))<<32 | flowKey(local)<<16 | flowKey(remote)
	return k, uint32(mix(uint64(k)))
}

// flowSlots is the size of a flowTable: a power of two.
const flowSlots = 4096

// flowTable remembers the queue each flow's frames last arrived on, in a
// fixed table indexed by the flow's hash: a flow whose slot another took
// since is forgotten and goes out on the queue its hash picks. It costs
// no allocation and no more memory however many flows pass, forged ones
// included. Owned by the link's poller.
type flowTable struct {
	slots [flowSlots]flowSlot
}

type flowSlot struct {
	key   flowKey
	queue uint8 // index into the link's queues
	used  bool
}

func (t *flowTable) get(k flowKey, h uint32) (int, bool) {
	s := &t.slots[h&(flowSlots-1)]
	if s.used && s.key == k {
		return int(s.queue), true
	}
	return 0, false
}

func (t *flowTable) put(k flowKey, h uint32, queue uint8) {
	t.slots[h&(flowSlots-1)] = flowSlot{key: k, queue: queue, used: true}
}
