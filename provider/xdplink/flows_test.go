package xdplink

import (
	"net/netip"
	"testing"

	"github.com/sdx-project/sdx/internal/wire"
)

// TestFlowEntropy: the two ends of a connection name its flow alike, and
// 64 connections to one peer get source ports of the range that are
// nearly all different, so RSS and ECMP can tell them apart.
func TestFlowEntropy(t *testing.T) {
	peer := netip.MustParseAddr("198.18.0.2")
	hdr := func(src, dst uint16) []byte {
		return wire.AppendDatagram(nil, &wire.Header{Op: wire.OpData, SrcPort: src, DstPort: dst}, nil)
	}
	ports := map[uint16]bool{}
	for i := range 64 {
		local := uint16(40000 + i)
		out, h := flowOf(peer, hdr(local, 80), false)
		in, _ := flowOf(peer, hdr(80, local), true)
		if out != in {
			t.Fatalf("connection %d: sent frames name flow %x, received ones %x", i, out, in)
		}
		p := wire.SrcPortMin + uint16(h%wire.SrcPorts)
		if p < wire.SrcPortMin {
			t.Fatalf("source port %d below the range", p)
		}
		ports[p] = true
	}
	if len(ports) < 60 {
		t.Fatalf("64 connections got %d different source ports", len(ports))
	}
}
