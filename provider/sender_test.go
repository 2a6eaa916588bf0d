package provider

import (
	"math"
	"slices"
	"testing"

	"github.com/sdx-project/sdx/internal/wire"
)

// testSender has n segments of 100 bytes from offset 0, the first
// inFlight of them sent, the k-th at time 10·k and transmission k+1.
func testSender(t *testing.T, n, inFlight int) *sender {
	t.Helper()
	s := &sender{segs: make([]seg, pow2(n+2)), sackKnown: math.MaxUint64}
	for i := range n {
		s.push(seg{seq: uint64(100 * i), buf: uint32(i), n: 100})
	}
	for i := range inFlight {
		g := s.at(i)
		g.sentAt, g.tx = int64(10*i), uint64(i+1)
	}
	s.sent = inFlight
	s.sndEnd, s.sndNxt = uint64(100*n), uint64(100*inFlight)
	return s
}

func marks(s *sender) (sacked, rtx []int) {
	for i := range s.sent {
		g := s.at(i)
		if g.sacked {
			sacked = append(sacked, i)
		}
		if g.rtx {
			rtx = append(rtx, i)
		}
	}
	return sacked, rtx
}

func TestSenderRing(t *testing.T) {
	s := &sender{segs: make([]seg, 4)}
	next := uint64(0)
	for round := range 10 {
		for !s.full() {
			s.push(seg{seq: next, n: 1})
			next++
		}
		if s.slen != 4 {
			t.Fatalf("round %d: %d segments in a ring of 4", round, s.slen)
		}
		s.sent = s.slen
		for i := range s.slen {
			if want := next - 4 + uint64(i); s.at(i).seq != want {
				t.Fatalf("round %d: segment %d has seq %d, want %d", round, i, s.at(i).seq, want)
			}
		}
		s.pop()
		s.pop()
		if s.slen != 2 || s.sent != 2 || s.at(0).seq != next-2 {
			t.Fatalf("round %d: after two pops %d segments, %d sent, head %d", round, s.slen, s.sent, s.at(0).seq)
		}
		s.pop()
		s.pop()
	}
	for i := range s.segs {
		if s.segs[i] != (seg{}) {
			t.Fatalf("popped segment %d not cleared: %+v", i, s.segs[i])
		}
	}
}

func TestSegEnd(t *testing.T) {
	if e := (&seg{seq: 7, n: 10}).end(); e != 17 {
		t.Errorf("data end %d", e)
	}
	if e := (&seg{seq: 7, fin: true}).end(); e != 8 {
		t.Errorf("a disconnect marker takes one offset: end %d", e)
	}
}

func TestSenderMarkSACKed(t *testing.T) {
	s := testSender(t, 8, 8)
	s.at(3).resent = true
	// The first block holds the segment whose arrival sent the ack: its
	// newest segment not resent is the sample. The second block gives
	// none.
	sample := s.markSACKed([]wire.SACKBlock{{Start: 200, End: 400}, {Start: 600, End: 800}}, 100)
	if sample != 100-20 {
		t.Errorf("sample %d, want the round trip of segment 2, 80", sample)
	}
	sacked, _ := marks(s)
	if !slices.Equal(sacked, []int{2, 3, 6, 7}) {
		t.Errorf("SACKed %v", sacked)
	}
	// Marked already: no new sample.
	if sample := s.markSACKed([]wire.SACKBlock{{Start: 200, End: 400}}, 200); sample != -1 {
		t.Errorf("sample %d from segments SACKed before", sample)
	}
	// A block covering part of a segment marks nothing.
	if s.markSACKed([]wire.SACKBlock{{Start: 450, End: 550}}, 300); s.at(4).sacked || s.at(5).sacked {
		t.Error("a partly covered segment was marked")
	}
	// Only segments in flight are marked.
	q := testSender(t, 4, 2)
	q.markSACKed([]wire.SACKBlock{{Start: 0, End: 400}}, 50)
	if q.at(2).sacked || q.at(3).sacked {
		t.Error("a queued segment was marked SACKed")
	}
}

// checkFastLost runs markFastLost and checks that it marked exactly the
// segments want for retransmission.
func checkFastLost(t *testing.T, s *sender, want ...int) {
	t.Helper()
	if n := s.markFastLost(); n != len(want) {
		t.Fatalf("marked %d, want %d", n, len(want))
	}
	if _, rtx := marks(s); !slices.Equal(rtx, want) {
		t.Fatalf("marked %v, want %v", rtx, want)
	}
}

func TestSenderMarkFastLost(t *testing.T) {
	s := testSender(t, 8, 8)
	s.markSACKed([]wire.SACKBlock{{Start: 300, End: 600}}, 100) // segments 3-5
	// Segments 0-2 have three SACKed segments above them; 6 and 7 none.
	checkFastLost(t, s, 0, 1, 2)
	// Once per loss episode.
	for i := range 3 {
		s.at(i).rtx = false // retransmitted
		s.at(i).tx = uint64(20 + i)
	}
	if n := s.markFastLost(); n != 0 {
		t.Fatalf("marked %d again", n)
	}
	// Segment 6, sent after the retransmissions of 0 and 1, is SACKed:
	// those were lost again, and are marked again; 2 was sent after it.
	s.at(6).tx = 22
	s.markSACKed([]wire.SACKBlock{{Start: 600, End: 700}}, 200)
	checkFastLost(t, s, 0, 1) // lost retransmissions
}

// Above sackKnown the peer's report may have left blocks out: no loss is
// inferred there.
func TestSenderMarkFastLostSACKKnown(t *testing.T) {
	s := testSender(t, 8, 8)
	s.markSACKed([]wire.SACKBlock{{Start: 400, End: 800}}, 100)
	s.sackKnown = 200
	checkFastLost(t, s, 0, 1)
}

func TestSenderSACKReport(t *testing.T) {
	s := testSender(t, 10, 10)
	s.markSACKed([]wire.SACKBlock{{Start: 200, End: 400}, {Start: 600, End: 1000}}, 100)
	// A report that is not full lists every block: segment 2-3 no longer
	// listed were dropped by the receiver.
	s.sackReport([]wire.SACKBlock{{Start: 600, End: 1000}})
	if s.sackKnown != math.MaxUint64 {
		t.Errorf("sackKnown %d after a report that is not full", s.sackKnown)
	}
	if sacked, _ := marks(s); !slices.Equal(sacked, []int{6, 7, 8, 9}) {
		t.Errorf("SACKed after a renege: %v", sacked)
	}
	// A full report knows up to the highest block of its ascending part
	// (the first block is the newest, out of order); above that a mark
	// stays although the report does not list it.
	full := make([]wire.SACKBlock, wire.MaxSACK)
	full[0] = wire.SACKBlock{Start: 600, End: 700}
	for i := 1; i < wire.MaxSACK; i++ {
		full[i] = wire.SACKBlock{Start: 10000 + 200*uint64(i), End: 10100 + 200*uint64(i)}
	}
	full[wire.MaxSACK-1] = wire.SACKBlock{Start: 700, End: 800} // the highest End is not the last
	s.sackReport(full)
	if want := full[wire.MaxSACK-2].End; s.sackKnown != want {
		t.Errorf("sackKnown %d, want %d", s.sackKnown, want)
	}
	if sacked, _ := marks(s); !slices.Equal(sacked, []int{6, 7}) {
		t.Errorf("SACKed after a full report: %v", sacked)
	}
	// Segments 8 and 9 SACKed, then a full report knowing up to 750 that
	// lists 6 only: 7, 8 and 9 end above 750 and keep their marks.
	s.markSACKed([]wire.SACKBlock{{Start: 700, End: 1000}}, 200)
	low := make([]wire.SACKBlock, wire.MaxSACK)
	low[0] = wire.SACKBlock{Start: 600, End: 700}
	for i := 1; i < wire.MaxSACK; i++ {
		low[i] = wire.SACKBlock{Start: 600 + 10*uint64(i), End: 700 + 10*uint64(i)}
	}
	s.sackReport(low)
	if s.sackKnown != 770 {
		t.Errorf("sackKnown %d, want 770", s.sackKnown)
	}
	if sacked, _ := marks(s); !slices.Equal(sacked, []int{6, 7, 8, 9}) {
		t.Errorf("SACKed after a report knowing up to %d: %v", s.sackKnown, sacked)
	}
}

func TestSenderCountDupAck(t *testing.T) {
	s := testSender(t, 4, 4)
	s.at(0).sacked = true
	for i := range 2 {
		if s.countDupAck() {
			t.Fatalf("duplicate %d marked a segment", i+1)
		}
	}
	if !s.countDupAck() {
		t.Fatal("the third duplicate marked nothing")
	}
	if _, rtx := marks(s); !slices.Equal(rtx, []int{1}) || !s.at(1).fast {
		t.Fatalf("marked %v, want the oldest not SACKed", rtx)
	}
	if s.countDupAck() {
		t.Fatal("the fourth duplicate marked another")
	}
	// Already fast-retransmitted in this episode: not again.
	q := testSender(t, 4, 4)
	q.at(0).fast = true
	for range 3 {
		if q.countDupAck() {
			t.Fatal("marked a segment fast-retransmitted already")
		}
	}
}

func TestSenderMarkLost(t *testing.T) {
	s := testSender(t, 6, 6) // sent at 0, 10, ..., 50
	s.at(1).sacked = true
	s.at(4).fast = true
	s.dupAcks = 2
	s.sackKnown = 400
	s.markLost(25)
	// 0 (the oldest), and 2 (sent at 20): 3 is too recent, 4 and 5 too,
	// and 1 is SACKed.
	if _, rtx := marks(s); !slices.Equal(rtx, []int{0, 2}) {
		t.Fatalf("marked %v", rtx)
	}
	if s.at(4).fast || s.dupAcks != 0 {
		t.Fatal("a new loss episode keeps the old one's state")
	}
	// The oldest segment not SACKed is marked however recent; above
	// sackKnown nothing else is.
	q := testSender(t, 4, 4)
	q.at(0).sacked = true
	q.sackKnown = 300
	q.markLost(100)
	if _, rtx := marks(q); !slices.Equal(rtx, []int{1, 2}) {
		t.Fatalf("marked %v", rtx)
	}
}
