package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sdx-project/sdx/internal/testutil"
)

// The ECN codepoints (RFC 3168) in the low bits of the TOS byte.
const (
	notECT = 0
	ect1   = 1
	ect0   = 2
	ecnCE  = 3
)

func (s MarkerStats) sub(o MarkerStats) MarkerStats {
	return MarkerStats{Seen: s.Seen - o.Seen, Over: s.Over - o.Over, Marked: s.Marked - o.Marked, Overflow: s.Overflow - o.Overflow}
}

func mustLoadMarker(t testing.TB) *Marker {
	t.Helper()
	m, err := LoadMarker()
	if err != nil {
		t.Fatalf("LoadMarker: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return m
}

// runMarker runs sdx_mark once on pkt and returns the frame as it left
// and the change in the counters.
func runMarker(t testing.TB, m *Marker, pkt []byte) ([]byte, MarkerStats) {
	t.Helper()
	before, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(pkt)+64)
	verdict, err := m.Program().Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Repeat: 1})
	if err != nil {
		t.Fatalf("run on %d bytes: %v", len(pkt), err)
	}
	if verdict != 0 {
		t.Fatalf("verdict %d; want TC_ACT_OK", verdict)
	}
	after, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return out[:len(pkt)], after.sub(before)
}

// checkMarked checks what sdx_mark made of the IPv4 frame in: out is in
// with the ECN field set to CE if wantCE, else in unchanged, and its IPv4
// header checksum is valid. ipOff is where the IPv4 header starts.
func checkMarked(in, out []byte, ipOff int, wantCE bool) error {
	want := bytes.Clone(in)
	if wantCE {
		want[ipOff+1] |= ecnCE
		want[ipOff+10], want[ipOff+11] = 0, 0
		c := ipChecksum(want[ipOff : ipOff+20])
		want[ipOff+10], want[ipOff+11] = byte(c>>8), byte(c)
	}
	if !bytes.Equal(out, want) {
		return fmt.Errorf("left the frame as % x...; want % x...", out[:ipOff+20], want[:ipOff+20])
	}
	if c := ipChecksum(out[ipOff : ipOff+20]); c != 0 {
		return fmt.Errorf("IPv4 header checksum does not verify (%#04x)", c)
	}
	return nil
}

// markModel is sdx_mark's virtual queue in Go, in the program's units
// (billionths of a byte), for the expected verdicts.
type markModel struct {
	rate, threshold, limit uint64 // bytes a second, bytes, bytes
	backlog                uint64
}

// enqueue drains d of time, adds a frame of n bytes if it fits, and says
// whether the queue is then above the threshold and whether it fitted.
func (q *markModel) enqueue(d time.Duration, n int) (over, fits bool) {
	if drain := uint64(d.Nanoseconds()) * q.rate; drain >= q.backlog {
		q.backlog = 0
	} else {
		q.backlog -= drain
	}
	size := uint64(n) * 1e9
	fits = q.backlog+size <= q.limit*1e9
	if fits {
		q.backlog += size
	}
	return q.backlog > q.threshold*1e9, fits
}

// TestMarkerThreshold runs a stream of 1000-byte frames through a queue
// that hardly drains (1 byte a second): the first frames that take it
// above the threshold (plus the burst, which a tbf lets through unqueued)
// and every frame after them are marked if they are ECN-capable, frames
// beyond the limit (plus the burst) count as overflow, and Not-ECT, CE,
// IPv6 and ARP frames leave exactly as they came. The IPv4 checksum of
// every frame verifies.
func TestMarkerThreshold(t *testing.T) {
	testutil.Privileged(t)
	m := mustLoadMarker(t)
	for _, burst := range []int{0, 5000} {
		t.Run(fmt.Sprintf("burst=%d", burst), func(t *testing.T) { markerThreshold(t, m, burst) })
	}
}

func markerThreshold(t *testing.T, m *Marker, burst int) {
	const threshold, limit = 10_000, 30_000
	if err := m.Configure(8, burst, threshold, limit); err != nil {
		t.Fatal(err)
	}
	q := markModel{rate: 1, threshold: uint64(threshold + burst), limit: uint64(limit + burst)}
	start := time.Now()
	var marked, overflow int
	for i := range 60 {
		codepoint := uint8(i % 4) // Not-ECT, ECT(1), ECT(0), CE in turn
		f := frame{dport: testPort, payload: 958, tos: 0xb8 | codepoint}
		ipOff := ethHLen
		var pkt []byte
		switch i % 12 {
		case 5: // tagged: the tag is skipped
			f.tags, ipOff = []uint16{tpidQ}, ethHLen+4
			pkt = f.bytes()
		case 7:
			pkt, ipOff = ip6UDPFrame(testPort), -1
		case 11:
			pkt, ipOff = arpFrame(), -1
		default:
			pkt = f.bytes()
		}
		over, fits := q.enqueue(0, len(pkt))
		out, st := runMarker(t, m, pkt)
		ecnCapable := ipOff >= 0 && (codepoint == ect0 || codepoint == ect1)
		wantMark := over && ecnCapable
		want := MarkerStats{Seen: 1}
		if over {
			want.Over = 1
		}
		if wantMark {
			want.Marked = 1
			marked++
		}
		if !fits {
			want.Overflow = 1
			overflow++
		}
		if st != want {
			t.Errorf("frame %d (%d bytes, codepoint %d): counters %+v; want %+v", i, len(pkt), codepoint, st, want)
		}
		if ipOff < 0 {
			if !bytes.Equal(out, pkt) {
				t.Errorf("frame %d, not IPv4: changed", i)
			}
			continue
		}
		if err := checkMarked(pkt, out, ipOff, wantMark); err != nil {
			t.Errorf("frame %d (codepoint %d, queue over the threshold %v): %v", i, codepoint, over, err)
		}
	}
	// The model leaves out the drain, 1 byte a second: the frames are 1000.
	if d := time.Since(start); d > 100*time.Second {
		t.Fatalf("the stream took %v: the drain is no longer negligible", d)
	}
	if marked == 0 || overflow == 0 {
		t.Fatalf("the stream tested nothing: %d marked, %d overflowed", marked, overflow)
	}
}

// TestMarkerDrain drains the queue at 800 kbit/s (100 kB a second).
// 1500-byte frames 25 ms apart find it empty each time (25 ms drain 2500
// bytes) and are never marked; frames 10 ms apart fill it by at most 500
// bytes each (10 ms drain 1000), so the first nine are not marked and the
// later ones may be; frames back to back fill it fast, and are marked once
// it is above the threshold. The program's clock is its own, so each
// verdict is checked against the queue the model gives for the least and
// the most time that can have passed between two runs.
func TestMarkerDrain(t *testing.T) {
	testutil.Privileged(t)
	m := mustLoadMarker(t)
	const rate, threshold, limit = 100_000, 6000, 1 << 30 // no overflow: the bounds need a queue that only grows with less drain
	if err := m.Configure(rate*8, 0, threshold, limit); err != nil {
		t.Fatal(err)
	}
	pkt := frame{dport: testPort, payload: 1458, tos: ect0}.bytes()
	most := markModel{rate: rate, threshold: threshold, limit: limit}  // the least drain: the longest queue
	least := markModel{rate: rate, threshold: threshold, limit: limit} // the most drain
	var sure, never, maybe int
	var prevBefore, prevAfter time.Time
	const paced, spaced, total = 10, 40, 70
	for i := range total {
		switch {
		case i < paced:
			time.Sleep(25 * time.Millisecond)
		case i < spaced:
			time.Sleep(10 * time.Millisecond)
		}
		before := time.Now()
		out, st := runMarker(t, m, pkt)
		after := time.Now()
		// The program's stamps lie within [before, after] of each run.
		var dMin, dMax time.Duration
		if i > 0 {
			dMin, dMax = max(before.Sub(prevAfter), 0), after.Sub(prevBefore)
		} else {
			dMin, dMax = time.Hour, time.Hour // a new queue is empty
		}
		prevBefore, prevAfter = before, after
		mustOver, _ := least.enqueue(dMax, len(pkt))
		mayOver, _ := most.enqueue(dMin, len(pkt))
		marked := st.Marked == 1
		switch {
		case mustOver:
			sure++
			if !marked {
				t.Errorf("frame %d: not marked; the queue held at least %d bytes", i, least.backlog/1e9)
			}
		case !mayOver:
			never++
			if marked {
				t.Errorf("frame %d: marked; the queue held at most %d bytes", i, most.backlog/1e9)
			}
		default:
			maybe++
		}
		if err := checkMarked(pkt, out, ethHLen, marked); err != nil {
			t.Errorf("frame %d: %v", i, err)
		}
	}
	t.Logf("%d frames surely over the threshold, %d surely not, %d either", sure, never, maybe)
	if sure == 0 || never < paced+9 {
		t.Fatalf("the timing decided too little: %d frames sure to be marked, %d sure not", sure, never)
	}
}

// TestMarkerConfigure checks the settings Configure refuses, that an
// unconfigured marker passes every frame uncounted, and ErrClosed.
func TestMarkerConfigure(t *testing.T) {
	testutil.Privileged(t)
	m := mustLoadMarker(t)
	pkt := frame{dport: testPort, payload: 1458, tos: ect0}.bytes()
	for range 3 {
		if out, st := runMarker(t, m, pkt); st != (MarkerStats{Seen: 1}) || !bytes.Equal(out, pkt) {
			t.Errorf("unconfigured: counters %+v, frame changed %v", st, !bytes.Equal(out, pkt))
		}
	}
	for _, c := range []struct {
		rate                    int64
		burst, threshold, limit int
	}{
		{0, 0, 1000, 2000},
		{7, 0, 1000, 2000},
		{1e9, -1, 1000, 2000},
		{1e9, 0, -1, 2000},
		{1e9, 0, 2000, 2000},
		{1e9, 0, 0, 0},
		{1e9, 0, 0, 1 << 32},
		{1e9, 1 << 31, 0, 1 << 31},
	} {
		if err := m.Configure(c.rate, c.burst, c.threshold, c.limit); err == nil {
			t.Errorf("Configure(%+v) succeeded", c)
		}
	}
	m.Close()
	if err := m.Configure(1e9, 0, 1000, 2000); !errors.Is(err, ErrClosed) {
		t.Errorf("Configure after Close: %v; want ErrClosed", err)
	}
	if _, err := m.AttachEgress(1); !errors.Is(err, ErrClosed) {
		t.Errorf("AttachEgress after Close: %v; want ErrClosed", err)
	}
	if _, err := m.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats after Close: %v; want ErrClosed", err)
	}
}
