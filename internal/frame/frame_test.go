package frame

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

var testFlow = Flow{
	Src: Endpoint{MAC: [6]byte{2, 0, 0, 0, 0, 1}, IP: netip.MustParseAddr("198.18.0.1"), Port: 40000},
	Dst: Endpoint{MAC: [6]byte{2, 0, 0, 0, 0, 2}, IP: netip.MustParseAddr("198.18.0.2"), Port: 4791},
}

func TestEncodeGolden(t *testing.T) {
	b := make([]byte, 64)
	n := testFlow.Encode(b, 4, 7)
	copy(b[HeaderLen:], "ping")
	want := "020000000002" + "020000000001" + "0800" + // ethernet
		"4500" + "0020" + "0007" + "4000" + "40" + "11" + "ae9e" + "c6120001" + "c6120002" + // ipv4
		"9c40" + "12b7" + "000c" + "0000" + // udp
		"70696e67"
	if got := hex.EncodeToString(b[:n]); got != want {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
}

// The ECN codepoint goes in the low two bits of the TOS byte, under the
// header checksum, and Parse reads it back, also after a hop marked CE.
func TestECN(t *testing.T) {
	b := make([]byte, 64)
	f := testFlow
	f.ECN = ECT0
	n := f.Encode(b, 4, 7)
	if b[EthLen+1] != 0x02 || hex.EncodeToString(b[EthLen+10:EthLen+12]) != "ae9c" {
		t.Fatalf("ECT(0) header: tos %#x checksum %x", b[EthLen+1], b[EthLen+10:EthLen+12])
	}
	var p Parsed
	if err := Parse(b[:n], &p); err != nil || p.Flow.ECN != ECT0 {
		t.Fatalf("parsed ECN %d, %v", p.Flow.ECN, err)
	}
	// A router marks CE and fixes the checksum (RFC 1624, as Linux does).
	f.ECN = CE
	f.Encode(b, 4, 7)
	if err := Parse(b[:n], &p); err != nil || p.Flow.ECN != CE {
		t.Fatalf("parsed ECN %d, %v; want CE", p.Flow.ECN, err)
	}
}

func TestRoundTrip(t *testing.T) {
	b := make([]byte, 2048)
	payload := bytes.Repeat([]byte{0xab}, 1400)
	n := testFlow.Encode(b, len(payload), 1)
	copy(b[HeaderLen:], payload)
	var p Parsed
	if err := Parse(b[:n], &p); err != nil {
		t.Fatal(err)
	}
	if p.Flow != testFlow || !bytes.Equal(p.Payload, payload) {
		t.Fatalf("round trip: %+v", p.Flow)
	}
	// Trailing Ethernet padding is not payload.
	if err := Parse(b[:n+10], &p); err != nil || len(p.Payload) != len(payload) {
		t.Fatalf("padding: %v %d", err, len(p.Payload))
	}
}

// The first piece of a frame spread over several buffers parses as the
// whole frame does, its payload cut where the piece ends; a piece that
// lacks the headers, or a frame shorter than its IPv4 length, is refused.
func TestParseHead(t *testing.T) {
	b := make([]byte, 9014)
	n := testFlow.Encode(b, 9014-HeaderLen, 1)
	var whole, head Parsed
	if err := Parse(b[:n], &whole); err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{HeaderLen, HeaderLen + 1, 3840, n} {
		plen, err := ParseHead(b[:cut], n, &head)
		if err != nil || plen != len(whole.Payload) || head.Flow != whole.Flow || len(head.Payload) != cut-HeaderLen {
			t.Fatalf("cut at %d: %v, payload %d (%d in the piece), flow %+v", cut, err, plen, len(head.Payload), head.Flow)
		}
	}
	if _, err := ParseHead(b[:HeaderLen-1], n, &head); err == nil {
		t.Fatal("headers cut short: parsed")
	}
	if _, err := ParseHead(b[:3840], n-1, &head); !errors.Is(err, ErrShort) {
		t.Fatalf("frame shorter than its IPv4 length: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	b := make([]byte, 128)
	n := testFlow.Encode(b, 16, 1)
	for l := range n {
		var p Parsed
		if err := Parse(b[:l], &p); !errors.Is(err, ErrShort) {
			t.Errorf("truncated at %d: %v, want ErrShort", l, err)
		}
	}
	mut := func(f func(c []byte)) []byte {
		c := append([]byte(nil), b[:n]...)
		f(c)
		return c
	}
	cases := map[string]struct {
		frame []byte
		want  error
	}{
		"ipv6":     {mut(func(c []byte) { c[12], c[13] = 0x86, 0xdd }), ErrNotIPv4},
		"tcp":      {mut(func(c []byte) { c[23] = 6; fix(c) }), ErrNotUDP},
		"ihl4":     {mut(func(c []byte) { c[14] = 0x44; fix(c) }), ErrBadIPv4},
		"checksum": {mut(func(c []byte) { c[24]++ }), ErrBadIPv4},
		"fragment": {mut(func(c []byte) { c[20] = 0x20; fix(c) }), ErrFragment},
		"udp len":  {mut(func(c []byte) { c[39] = 200 }), ErrShort},
	}
	for name, c := range cases {
		var p Parsed
		if err := Parse(c.frame, &p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func fix(c []byte) {
	c[24], c[25] = 0, 0
	s := Checksum(c[14 : 14+int(c[14]&0xf)*4])
	c[24], c[25] = byte(s>>8), byte(s)
}

func TestAllocs(t *testing.T) {
	b := make([]byte, 256)
	var p Parsed
	n := testing.AllocsPerRun(100, func() {
		l := testFlow.Encode(b, 64, 1)
		if Parse(b[:l], &p) != nil {
			t.Fatal("parse")
		}
	})
	if n != 0 {
		t.Fatalf("%v allocs per encode+parse", n)
	}
}

func FuzzParse(f *testing.F) {
	b := make([]byte, 128)
	n := testFlow.Encode(b, 16, 1)
	f.Add(b[:n])
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Parsed
		if Parse(data, &p) == nil && len(p.Payload) > len(data) {
			t.Fatal("payload longer than frame")
		}
	})
}
