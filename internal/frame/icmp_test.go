package frame

import (
	"encoding/binary"
	"errors"
	"testing"
)

// unreachOf builds an ICMP port unreachable from the flow's destination
// to its source, quoting the first n bytes of the IPv4 datagram of the
// frame f (all of it if n is 0).
func unreachOf(f []byte, n int) []byte {
	q := f[EthLen:]
	if n > 0 {
		q = q[:n]
	}
	b := make([]byte, EthLen+IPv4Len+icmpLen+len(q))
	copy(b[0:6], f[6:12])
	copy(b[6:12], f[0:6])
	binary.BigEndian.PutUint16(b[12:], etherTypeIPv4)
	ip := b[EthLen : EthLen+IPv4Len]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(IPv4Len+icmpLen+len(q)))
	ip[8], ip[9] = 64, protoICMP
	copy(ip[12:16], f[EthLen+16:EthLen+20])
	copy(ip[16:20], f[EthLen+12:EthLen+16])
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip))
	icmp := b[EthLen+IPv4Len:]
	icmp[0], icmp[1] = icmpUnreach, icmpPortUnreach
	copy(icmp[icmpLen:], q)
	binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp))
	return b
}

func TestParseUnreach(t *testing.T) {
	f := make([]byte, 128)
	n := testFlow.Encode(f, 16, 1)
	for i := range 16 {
		f[HeaderLen+i] = byte(i)
	}
	f = f[:n]
	var u Unreach
	if err := ParseUnreach(unreachOf(f, 0), &u); err != nil {
		t.Fatal(err)
	}
	if u.From != testFlow.Dst.IP || u.To != testFlow.Src.IP || u.Quote.Src.IP != testFlow.Src.IP || u.Quote.Dst.IP != testFlow.Dst.IP ||
		u.Quote.Src.Port != testFlow.Src.Port || u.Quote.Dst.Port != testFlow.Dst.Port || len(u.Quoted) != 16 || u.Quoted[15] != 15 {
		t.Fatalf("parsed %+v", u)
	}
	// RFC 792's minimum: the UDP header and nothing of its payload.
	if err := ParseUnreach(unreachOf(f, IPv4Len+UDPLen), &u); err != nil || len(u.Quoted) != 0 {
		t.Fatalf("minimal quote: %v, %d bytes quoted", err, len(u.Quoted))
	}
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"UDP header cut", unreachOf(f, IPv4Len+UDPLen-1), ErrShort},
		{"an sdx frame", f, ErrNotICMP},
		{"bad ICMP checksum", func() []byte { b := unreachOf(f, 0); b[len(b)-1] ^= 1; return b }(), ErrBadICMP},
		{"host unreachable", func() []byte { b := unreachOf(f, 0); b[EthLen+IPv4Len+1] = 1; return b }(), ErrNotUnreach},
		{"quoting TCP", func() []byte {
			g := append([]byte(nil), f...)
			g[EthLen+9] = 6
			return unreachOf(g, 0)
		}(), ErrBadQuote},
		{"truncated", unreachOf(f, 0)[:EthLen+IPv4Len+4], ErrShort},
	} {
		if err := ParseUnreach(c.b, &u); !errors.Is(err, c.want) {
			t.Errorf("%s: %v; want %v", c.name, err, c.want)
		}
	}
}

func FuzzParseUnreach(f *testing.F) {
	b := make([]byte, 128)
	n := testFlow.Encode(b, 16, 1)
	f.Add(unreachOf(b[:n], 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		var u Unreach
		if ParseUnreach(data, &u) == nil && len(u.Quoted) > len(data) {
			t.Fatal("quote longer than frame")
		}
	})
}
