package provider

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

func TestReceiverRing(t *testing.T) {
	r := &receiver{rq: make([]rseg, 4)}
	for round := range 10 {
		for k := 0; !r.rqFull(); k++ {
			r.pushRQ(rseg{buf: uint32(round*4 + k), off: 2, end: 12})
		}
		if r.rqLen != 4 || r.rqBytes != 40 {
			t.Fatalf("round %d: %d entries, %d bytes", round, r.rqLen, r.rqBytes)
		}
		for k := range 4 {
			if b := r.rqAt(k).buf; b != uint32(round*4+k) {
				t.Fatalf("round %d: entry %d holds buffer %d", round, k, b)
			}
		}
		for range 4 {
			r.rqBytes -= int(r.rqAt(0).end - r.rqAt(0).off) // read
			r.popRQ()
		}
		if r.rqLen != 0 || r.rqBytes != 0 {
			t.Fatalf("round %d: %d entries, %d bytes left", round, r.rqLen, r.rqBytes)
		}
	}
	for i := range r.rq {
		if r.rq[i] != (rseg{}) {
			t.Fatalf("popped entry %d not cleared", i)
		}
	}
}

func oooSeqs(r *receiver) []uint64 {
	var s []uint64
	for _, o := range r.ooo {
		s = append(s, o.seq)
	}
	return s
}

// Out-of-order segments stay sorted, and data they hold already is
// recognised as a duplicate.
func TestReceiverOOO(t *testing.T) {
	r := &receiver{ooo: make([]oseg, 0, 8)}
	for _, seq := range []uint64{500, 100, 300, 900, 700} {
		i, dup := r.oooPlace(seq, 100)
		if dup {
			t.Fatalf("%d: a duplicate in %v", seq, oooSeqs(r))
		}
		r.oooInsert(i, oseg{seq: seq, n: 100})
		if r.lastOOO != seq {
			t.Fatalf("newest %d, want %d", r.lastOOO, seq)
		}
	}
	want := []uint64{100, 300, 500, 700, 900}
	if got := oooSeqs(r); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	for _, tc := range []struct {
		seq uint64
		n   int
		dup bool
	}{
		{300, 100, true},  // the same segment
		{300, 50, true},   // its start
		{350, 50, true},   // its end, inside the one before
		{320, 60, true},   // inside
		{300, 150, false}, // longer
		{350, 100, false}, // reaches into the hole after it
		{400, 100, false}, // the hole
		{1000, 10, false}, // beyond all
		{50, 20, false},   // below all
	} {
		if _, dup := r.oooPlace(tc.seq, tc.n); dup != tc.dup {
			t.Errorf("[%d, %d): duplicate %v, want %v", tc.seq, tc.seq+uint64(tc.n), dup, tc.dup)
		}
	}
	r.oooDrop(2)
	if got := oooSeqs(r); !slices.Equal(got, want[2:]) {
		t.Fatalf("after dropping two: %v", got)
	}
	if full := r.ooo[:cap(r.ooo)]; full[3] != (oseg{}) || full[4] != (oseg{}) {
		t.Fatal("dropped segments not cleared")
	}
}

func TestReceiverFillSACK(t *testing.T) {
	r := &receiver{}
	for _, o := range []oseg{{seq: 200, n: 100}, {seq: 300, n: 100}, {seq: 600, n: 100}, {seq: 900, n: 50}, {seq: 920, n: 100}} {
		r.ooo = append(r.ooo, o)
	}
	r.lastOOO = 600
	h := &wire.Header{Ack: 100}
	scratch := r.fillSACK(h, nil)
	// Touching segments merge; the block of the newest comes first, the
	// others follow from the lowest.
	want := []wire.SACKBlock{{Start: 600, End: 700}, {Start: 200, End: 400}, {Start: 900, End: 1020}}
	if int(h.NSACK) != len(want) {
		t.Fatalf("%d blocks: %v", h.NSACK, h.SACK[:h.NSACK])
	}
	for i, b := range want {
		if h.SACK[i] != b {
			t.Errorf("block %d: %v, want %v", i, h.SACK[i], b)
		}
	}
	// Blocks start no lower than the ack.
	h = &wire.Header{Ack: 250}
	scratch = r.fillSACK(h, scratch)
	if h.SACK[1] != (wire.SACKBlock{Start: 250, End: 400}) {
		t.Errorf("block below the ack: %v", h.SACK[1])
	}
	// No out-of-order data, no blocks; the scratch is reused, so a
	// report allocates nothing once it has grown.
	h.NSACK = 3
	if got := (&receiver{}).fillSACK(h, scratch); h.NSACK != 0 || cap(got) != cap(scratch) {
		t.Errorf("%d blocks with nothing out of order", h.NSACK)
	}
	if n := testing.AllocsPerRun(100, func() { scratch = r.fillSACK(h, scratch) }); n != 0 {
		t.Errorf("fillSACK allocates %v times", n)
	}
}

// With more blocks than a report holds, the report lists the newest and
// then the lowest, so that it covers everything below the highest block
// of its ascending part (see sender.sackReport).
func TestReceiverFillSACKFull(t *testing.T) {
	r := &receiver{}
	for i := range 20 {
		r.ooo = append(r.ooo, oseg{seq: uint64(1000 + 200*i), n: 100})
	}
	r.lastOOO = 1000 + 200*15
	h := &wire.Header{Ack: 900}
	r.fillSACK(h, nil)
	if h.NSACK != wire.MaxSACK {
		t.Fatalf("%d blocks", h.NSACK)
	}
	if h.SACK[0].Start != r.lastOOO {
		t.Errorf("first block %v, want the newest at %d", h.SACK[0], r.lastOOO)
	}
	for i := 1; i < wire.MaxSACK; i++ {
		if want := uint64(1000 + 200*(i-1)); h.SACK[i].Start != want {
			t.Errorf("block %d: %v, want from %d", i, h.SACK[i], want)
		}
	}
}

func TestReceiverTakeFin(t *testing.T) {
	r := &receiver{rcvNxt: 100}
	if r.takeFin() {
		t.Fatal("end of stream without a marker")
	}
	r.finPending, r.finSeq = true, 150
	if r.takeFin() || r.eof {
		t.Fatal("end of stream before the data before it")
	}
	r.rcvNxt = 150
	if !r.takeFin() || !r.eof || r.rcvNxt != 151 {
		t.Fatalf("eof %v rcvNxt %d", r.eof, r.rcvNxt)
	}
	if r.takeFin() || r.rcvNxt != 151 {
		t.Fatal("end of stream taken twice")
	}
}

func TestReceiverAckSent(t *testing.T) {
	r := &receiver{ackNow: true, ackAt: 5, probeAck: true, answer: true, unacked: 3, dupIn: 2}
	r.ackSent()
	if r.ackNow || r.ackAt != 0 || r.probeAck || r.answer || r.unacked != 0 {
		t.Fatalf("an ack still owed: %+v", *r)
	}
	if r.dupIn != 2 {
		t.Fatal("ackSent forgot the duplicates seen")
	}
}

// In-order data goes straight into the buffer of a waiting receive, as
// much as fits, the rest into the queue behind it, in order; it takes no
// buffer and leaves the window open. Data that arrives while something is
// queued queues behind it.
func TestReceiverDeliversIntoWaitingReceive(t *testing.T) {
	v := newVNet(t, 31, memnet.Faults{Delay: 10 * time.Microsecond}, testEngineConfig(), 2)
	a, b := v.pair()
	ea, eb := v.hosts[0], v.hosts[1]
	msg := make([]byte, 3000)
	for i := range msg {
		msg[i] = byte(i * 13)
	}
	rd := make([]byte, 1000)
	b.rcv.rd = rd
	if _, err := ea.write(a, msg); err != nil {
		t.Fatal(err)
	}
	v.run(time.Second, func() bool { return b.rcv.rcvNxt == uint64(len(msg)) })
	if b.rcv.rdN != len(rd) || b.rcv.rqBytes != len(msg)-len(rd) || !bytes.Equal(rd, msg[:len(rd)]) {
		t.Fatalf("delivered %d, queued %d; want %d and %d, the first bytes in order", b.rcv.rdN, b.rcv.rqBytes, len(rd), len(msg)-len(rd))
	}
	if got := eb.st.recvDirect.Load(); got != uint64(len(rd)) {
		t.Fatalf("recvDirect %d", got)
	}
	// Taken back: the rest is read from the queue, in order.
	if n := takeDirect(b); n != len(rd) || b.rcv.rd != nil {
		t.Fatalf("takeDirect %d", n)
	}
	rest := make([]byte, len(msg))
	n, err := eb.read(b, rest)
	if err != nil || !bytes.Equal(rest[:n], msg[len(rd):]) {
		t.Fatalf("read %d, %v", n, err)
	}
	// With data queued, a waiting buffer gets nothing until it is read.
	if _, err := ea.write(a, msg[:100]); err != nil {
		t.Fatal(err)
	}
	v.run(time.Second, func() bool { return b.rcv.rqBytes == 100 })
	b.rcv.rd = rd
	if _, err := ea.write(a, msg[100:200]); err != nil {
		t.Fatal(err)
	}
	v.run(time.Second, func() bool { return b.rcv.rqBytes == 200 })
	if b.rcv.rdN != 0 {
		t.Fatalf("%d bytes delivered past queued data", b.rcv.rdN)
	}
	takeDirect(b)
	checkPool(t, ea)
}

// pieces consumes a datagram held in several buffers as one run of bytes.
func TestReceiverPieces(t *testing.T) {
	whole := make([]byte, 100)
	for i := range whole {
		whole[i] = byte(i)
	}
	for _, cuts := range [][]int{{100}, {1, 100}, {40, 41, 90, 100}, {0, 50, 50, 100}} {
		mk := func() pieces {
			var d pieces
			at := 0
			for i, c := range cuts {
				if i == 0 {
					d.p = whole[:c]
				} else {
					d.more = append(d.more, whole[at:c])
				}
				at = c
			}
			return d
		}
		d := mk()
		if d.len() != len(whole) {
			t.Fatalf("%v: len %d", cuts, d.len())
		}
		d.skip(7)
		got := make([]byte, 0, 100)
		for buf := make([]byte, 13); ; {
			k := d.copyTo(buf)
			got = append(got, buf[:k]...)
			if k < len(buf) {
				break
			}
		}
		if !bytes.Equal(got, whole[7:]) || d.len() != 0 {
			t.Fatalf("%v: after skip(7) and copies: %d bytes, %d left", cuts, len(got), d.len())
		}
		d = mk()
		d.skip(200)
		if d.len() != 0 {
			t.Fatalf("%v: skip past the end left %d", cuts, d.len())
		}
	}
}
