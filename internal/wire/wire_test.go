package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// goldenData is a data frame with an ack and two SACK blocks; its bytes are
// pinned below, field by field, as docs/PROTOCOL.md lays them out.
func goldenData() (Header, []byte) {
	h := Header{
		Op:      OpData,
		Flags:   FlagAck,
		SrcPort: 0x1234,
		DstPort: 0x5678,
		SrcConn: 0x01020304,
		DstConn: 0x05060708,
		Window:  0x00010000,
		Token:   0x1122334455667788,
		Seq:     0x0000000100000000,
		Ack:     0x0000000000001000,
		NSACK:   2,
	}
	h.SACK[0] = SACKBlock{Start: 0x1800, End: 0x1c00}
	h.SACK[1] = SACKBlock{Start: 0x2000, End: 0x2001}
	return h, []byte("sdx!")
}

const goldenDataHex = "" +
	"01" + "04" + "01" + "02" + // version, opcode data, flags ack, 2 SACK blocks
	"10aef618" + // CRC-32C (Castagnoli) of the datagram with this field zero
	"1234" + "5678" + // ports
	"01020304" + "05060708" + // conn ids
	"00010000" + // window
	"1122334455667788" + // token
	"0000000100000000" + // seq
	"0000000000001000" + // ack
	"0004" + "00" + "00" + // payload length, reason, reserved
	"00000800" + "00000400" + // SACK 1: ack+0x800, 0x400 bytes
	"00001000" + "00000001" + // SACK 2: ack+0x1000, 1 byte
	"73647821" // payload "sdx!"

const goldenResetHex = "" +
	"01" + "06" + "00" + "00" +
	"79f1ffbb" +
	"0050" + "c000" +
	"00000009" + "0000000a" +
	"00000000" +
	"cafef00dcafef00d" +
	"0000000000000000" +
	"0000000000000000" +
	"0000" + "04" + "00"

// goldenConnectHex is a connect request announcing a 8972-byte largest
// datagram (a 9000-byte MTU less IPv4 and UDP) in its payload.
const goldenConnectHex = "" +
	"01" + "01" + "00" + "00" + // version, opcode connect, no flags, no SACK
	"820a0010" +
	"c001" + "1f90" +
	"00100001" + "00000000" + // the connector's id; no acceptor id yet
	"00040000" +
	"0123456789abcdef" +
	"0000000000000000" + // seq: no cookie
	"0000000000000000" +
	"0002" + "00" + "00" + // a 2-byte payload
	"230c" // the announcement: 8972

// goldenECNAckHex is an ack on a connection both ends took part in ECN
// on: FlagECN set, and byte 51 the count of CE-marked data frames
// received (42).
const goldenECNAckHex = "" +
	"01" + "05" + "09" + "00" + // version, opcode ack, flags ack|ecn, no SACK
	"f51ae201" +
	"c001" + "1f90" +
	"00100001" + "00200002" +
	"00040000" +
	"0123456789abcdef" +
	"0000000000000010" +
	"0000000000005000" +
	"0000" + "00" + "2a" // no payload, no reason, CE count 42

// goldenHeartbeatHex is a heartbeat asking for an answer, named after a
// connection (its ids, ports and token), with the sender's incarnation in
// seq and the receiver's, as the sender knows it, in ack.
const goldenHeartbeatHex = "" +
	"01" + "0a" + "04" + "00" + // version, opcode heartbeat, ACKREQ, no SACK
	"5935794d" +
	"c001" + "1f90" +
	"00100001" + "00200003" +
	"00000000" + // no window
	"0123456789abcdef" +
	"1122334455667789" + // seq: the sender's incarnation
	"99aabbccddeeff01" + // ack: the receiver's incarnation
	"0000" + "00" + "00"

// goldenAcceptIncHex is an accept announcing a 1472-byte largest datagram
// and the acceptor's incarnation after it.
const goldenAcceptIncHex = "" +
	"01" + "02" + "01" + "00" + // version, opcode accept, ACK, no SACK
	"84577b07" +
	"1f90" + "c001" +
	"00200003" + "00100001" +
	"00040000" +
	"0123456789abcdef" +
	"0000000000000000" +
	"0000000000000000" +
	"000a" + "00" + "00" + // a 10-byte payload
	"05c0" + // the announcement: 1472
	"99aabbccddeeff01" // the incarnation

// TestWireGoldenHeartbeat pins the heartbeat and the incarnation in an
// accept's payload, and reads both back; an announcement alone (an sdx
// before heartbeats) carries incarnation 0.
func TestWireGoldenHeartbeat(t *testing.T) {
	h := Header{Op: OpHeartbeat, Flags: FlagAckReq, SrcPort: 0xc001, DstPort: 8080, SrcConn: 0x00100001, DstConn: 0x00200003, Token: 0x0123456789abcdef, Seq: 0x1122334455667789, Ack: 0x99aabbccddeeff01}
	got := AppendDatagram(nil, &h, nil)
	want, _ := hex.DecodeString(goldenHeartbeatHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("heartbeat encoding\n got %x\nwant %x", got, want)
	}
	var d Header
	if _, err := d.Decode(got); err != nil || d != h || d.Op.String() != "heartbeat" {
		t.Fatalf("heartbeat decodes to %+v, %v", d, err)
	}
	c := Header{Op: OpAccept, Flags: FlagAck, SrcPort: 8080, DstPort: 0xc001, SrcConn: 0x00200003, DstConn: 0x00100001, Window: 256 << 10, Token: 0x0123456789abcdef}
	p := make([]byte, AnnounceLen+IncarnationLen)
	PutAnnounce(p, 1500-28)
	PutIncarnation(p, 0x99aabbccddeeff01)
	got = AppendDatagram(nil, &c, p)
	want, _ = hex.DecodeString(goldenAcceptIncHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("accept encoding\n got %x\nwant %x", got, want)
	}
	payload, err := d.Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := Announced(payload); !ok || n != 1472 {
		t.Fatalf("announcement %d %v, want 1472", n, ok)
	}
	if inc := Incarnation(payload); inc != 0x99aabbccddeeff01 {
		t.Fatalf("incarnation %x", inc)
	}
	if inc := Incarnation(payload[:AnnounceLen]); inc != 0 {
		t.Fatalf("incarnation %x from an announcement alone, want 0", inc)
	}
	if inc := Incarnation(payload[:AnnounceLen+IncarnationLen-1]); inc != 0 {
		t.Fatalf("incarnation %x from a short one, want 0", inc)
	}
}

func TestWireGolden(t *testing.T) {
	h, payload := goldenData()
	got := AppendDatagram(nil, &h, payload)
	want, _ := hex.DecodeString(goldenDataHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("data encoding\n got %x\nwant %x", got, want)
	}
	r := Header{Op: OpReset, SrcPort: 80, DstPort: 0xc000, SrcConn: 9, DstConn: 10, Token: 0xcafef00dcafef00d, Reason: ReasonClosed}
	got = AppendDatagram(nil, &r, nil)
	want, _ = hex.DecodeString(goldenResetHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("reset encoding\n got %x\nwant %x", got, want)
	}
	c := Header{Op: OpConnect, SrcPort: 0xc001, DstPort: 8080, SrcConn: 0x00100001, Window: 256 << 10, Token: 0x0123456789abcdef}
	ann := make([]byte, AnnounceLen)
	PutAnnounce(ann, 9000-28)
	got = AppendDatagram(nil, &c, ann)
	want, _ = hex.DecodeString(goldenConnectHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("connect encoding\n got %x\nwant %x", got, want)
	}
	var d Header
	p, err := d.Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := Announced(p); !ok || n != 9000-28 {
		t.Fatalf("announcement %d %v, want 8972", n, ok)
	}
	a := Header{Op: OpAck, Flags: FlagAck | FlagECN, SrcPort: 0xc001, DstPort: 8080, SrcConn: 0x00100001, DstConn: 0x00200002,
		Window: 256 << 10, Token: 0x0123456789abcdef, Seq: 0x10, Ack: 0x5000, CE: 42}
	got = AppendDatagram(nil, &a, nil)
	want, _ = hex.DecodeString(goldenECNAckHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("ECN ack encoding\n got %x\nwant %x", got, want)
	}
	if _, err := d.Decode(got); err != nil || d.CE != 42 || d.Flags&FlagECN == 0 {
		t.Fatalf("ECN ack decoded as %+v, %v", d, err)
	}
	// Without FlagECN the count is not sent: an old peer sees a zero.
	a.Flags = FlagAck
	if got = AppendDatagram(nil, &a, nil); got[51] != 0 {
		t.Fatalf("CE count %d sent without FlagECN", got[51])
	}
}

// TestAnnounced checks the reading of a connect's or accept's payload:
// none, a valid announcement, one too small, and a truncated one.
func TestAnnounced(t *testing.T) {
	for _, c := range []struct {
		payload []byte
		n       int
		ok      bool
	}{
		{nil, 0, true},
		{[]byte{0x05, 0xc0}, 1472, true},
		{[]byte{0x05, 0xc0, 0xff}, 1472, true}, // later bytes are reserved
		{[]byte{0x00, byte(MinAnnounce - 1)}, MinAnnounce - 1, false},
		{[]byte{0x05}, 0, false},
	} {
		if n, ok := Announced(c.payload); n != c.n || ok != c.ok {
			t.Errorf("announced(%x) = %d, %v; want %d, %v", c.payload, n, ok, c.n, c.ok)
		}
	}
}

func TestWireRoundTrip(t *testing.T) {
	h, payload := goldenData()
	b := AppendDatagram(nil, &h, payload)
	var d Header
	p, err := d.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if d != h || !bytes.Equal(p, payload) {
		t.Fatalf("decoded %+v %q, want %+v %q", d, p, h, payload)
	}
	for op := OpConnect; op < NumOpcodes; op++ {
		h := Header{Op: op, Seq: 1 << 40, Ack: ^uint64(0) - 5, NSACK: 1}
		h.SACK[0] = SACKBlock{Start: h.Ack + 2, End: h.Ack + 9} // wraps past 2^64
		var d Header
		if _, err := d.Decode(AppendDatagram(nil, &h, nil)); err != nil || d != h {
			t.Errorf("%v: %v %+v", op, err, d)
		}
	}
}

// A datagram held in pieces (a multi-buffer frame) decodes as the joined
// one does, wherever it is cut after the header; its checksum covers every
// piece, and a missing piece is a length error.
func TestWireDecodePieces(t *testing.T) {
	h := Header{Op: OpData, Seq: 7, Window: 1 << 20}
	payload := make([]byte, 9000)
	for i := range payload {
		payload[i] = byte(i * 31)
	}
	b := AppendDatagram(nil, &h, payload)
	for _, cut := range [][]int{{HeaderLen}, {HeaderLen + 1, 4000}, {3840, 7680}, {100, 101, 102}} {
		first, more, at := b[:cut[0]], [][]byte(nil), cut[0]
		for _, c := range cut[1:] {
			more, at = append(more, b[at:c]), c
		}
		more = append(more, b[at:])
		var d Header
		p, err := d.DecodePieces(first, more)
		if err != nil || d != h {
			t.Fatalf("cut %v: %v %+v", cut, err, d)
		}
		got := slices.Concat(append([][]byte{p}, more...)...)
		if !bytes.Equal(got, payload) {
			t.Fatalf("cut %v: payload differs", cut)
		}
		last := more[len(more)-1]
		last[len(last)-1] ^= 1
		if _, err := d.DecodePieces(first, more); !errors.Is(err, ErrChecksum) {
			t.Fatalf("cut %v: a flipped bit in the last piece: %v", cut, err)
		}
		last[len(last)-1] ^= 1
		if _, err := d.DecodePieces(first, more[:len(more)-1]); err == nil {
			t.Fatalf("cut %v: a missing piece decoded", cut)
		}
	}
	var d Header
	if _, err := d.DecodePieces(b[:HeaderLen-1], [][]byte{b[HeaderLen-1:]}); err == nil {
		t.Fatal("a header cut in two decoded")
	}
}

func TestWireDecodeRejects(t *testing.T) {
	h, payload := goldenData()
	good := AppendDatagram(nil, &h, payload)
	cases := []struct {
		name string
		mod  func(b []byte) []byte
		want error
	}{
		{"empty", func(b []byte) []byte { return nil }, errShort},
		{"short", func(b []byte) []byte { return b[:HeaderLen-1] }, errShort},
		{"version", func(b []byte) []byte { b[0] = 2; return b }, errVersion},
		{"opcode 0", func(b []byte) []byte { b[1] = 0; return b }, errOpcode},
		{"opcode 200", func(b []byte) []byte { b[1] = 200; return b }, errOpcode},
		{"too many sack", func(b []byte) []byte { b[3] = MaxSACK + 1; return b }, errLength},
		{"truncated payload", func(b []byte) []byte { return b[:len(b)-1] }, errLength},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0) }, errLength},
		{"reserved", func(b []byte) []byte { b[51] = 1; return b }, errReserved},
		{"payload bit flip", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, ErrChecksum},
		{"header bit flip", func(b []byte) []byte { b[30] ^= 0x80; return b }, ErrChecksum},
	}
	for _, c := range cases {
		b := c.mod(bytes.Clone(good))
		var d Header
		if _, err := d.Decode(b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A zero-length SACK block is malformed even with a right checksum.
	z := h
	z.SACK[1].End = z.SACK[1].Start
	var d Header
	if _, err := d.Decode(AppendDatagram(nil, &z, nil)); !errors.Is(err, errSACK) {
		t.Errorf("empty SACK block: %v", err)
	}
}

func TestWireDecodeAllocs(t *testing.T) {
	h, payload := goldenData()
	b := AppendDatagram(nil, &h, payload)
	buf := make([]byte, 1500)
	var d Header
	n := testing.AllocsPerRun(1000, func() {
		if _, err := d.Decode(b); err != nil {
			t.Fatal(err)
		}
		copy(buf[h.Len():], payload)
		d.Put(buf, len(payload))
		d.Decode(b[:10])
	})
	if n != 0 {
		t.Fatalf("%v allocations per decode and encode", n)
	}
}

func TestDropOpcodes(t *testing.T) {
	f := DropOpcodes(OpReset, OpReject)
	for op := OpConnect; op < NumOpcodes; op++ {
		h := Header{Op: op}
		want := op == OpReset || op == OpReject
		if got := f(netip.Addr{}, netip.Addr{}, AppendDatagram(nil, &h, nil)); got != want {
			t.Errorf("%v: drop %v", op, got)
		}
	}
	if f(netip.Addr{}, netip.Addr{}, nil) {
		t.Error("dropped an empty datagram")
	}
}

// FuzzDecode checks that Decode never panics, and that whatever it accepts
// encodes back to the same bytes: the encoding is canonical.
func FuzzDecode(f *testing.F) {
	h, payload := goldenData()
	f.Add(AppendDatagram(nil, &h, payload))
	r, _ := hex.DecodeString(goldenResetHex)
	f.Add(r)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Header
		if p, err := d.Decode(b); err == nil {
			if again := AppendDatagram(nil, &d, p); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs\n got %x\nwant %x", again, b)
			}
		}
		// The same again without the checksum, so the fuzzer reaches
		// the parsing behind it; the re-encoding then differs from b
		// at most in the checksum field.
		p, err := d.decode(b, nil, false)
		if err != nil {
			return
		}
		if len(p) != int(d.PayloadLen) {
			t.Fatalf("payload %d bytes, header says %d", len(p), d.PayloadLen)
		}
		again := AppendDatagram(nil, &d, p)
		copy(again[4:8], b[4:8])
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs\n got %x\nwant %x", again, b)
		}
	})
}

// Ports reads the ports the codec wrote, and nothing from a datagram too
// short to hold them.
func TestPorts(t *testing.T) {
	h, payload := goldenData()
	src, dst, ok := Ports(AppendDatagram(nil, &h, payload))
	if !ok || src != h.SrcPort || dst != h.DstPort {
		t.Fatalf("Ports: %#x %#x %v, want %#x %#x", src, dst, ok, h.SrcPort, h.DstPort)
	}
	if _, _, ok := Ports(make([]byte, DstPortOff+1)); ok {
		t.Fatal("Ports read a datagram too short")
	}
}
