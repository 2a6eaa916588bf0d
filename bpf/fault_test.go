package bpf

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

const (
	xdpDrop = 1

	// sdxOpcodeOff is where the opcode sits in the sdx header, which starts
	// the UDP payload: docs/PROTOCOL.md, "sdx header" (offset 1, one byte),
	// and provider/wire.go.
	sdxOpcodeOff = 1

	opAccept, opReject, opData, opAck, opReset = 2, 3, 4, 5, 6
)

// withOpcode returns the frame with op in the opcode byte of its sdx
// header. The frame needs a payload of at least two bytes.
func (f frame) withOpcode(op byte) []byte {
	b := f.bytes()
	b[ethHLen+4*len(f.tags)+max(f.ihl, 5)*4+8+sdxOpcodeOff] = op
	return b
}

func (s FaultStats) sub(o FaultStats) FaultStats {
	return FaultStats{
		Seen:     s.Seen - o.Seen,
		Eligible: s.Eligible - o.Eligible,
		Dropped:  s.Dropped - o.Dropped,
		Passed:   s.Passed - o.Passed,
	}
}

func (s FaultStats) balanced() bool {
	return s.Seen == s.Dropped+s.Passed && s.Dropped <= s.Eligible
}

func mustLoadFault(t testing.TB) *Fault {
	t.Helper()
	f, err := LoadFault()
	if err != nil {
		t.Fatalf("LoadFault: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f
}

func configure(t testing.TB, f *Fault, c FaultConfig) {
	t.Helper()
	if err := f.Configure(c); err != nil {
		t.Fatalf("configure %+v: %v", c, err)
	}
}

func faultStats(t testing.TB, f *Fault) FaultStats {
	t.Helper()
	st, err := f.Stats()
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// perCPU returns the counters of each CPU.
func perCPU(t testing.TB, f *Fault) []faultCounters {
	t.Helper()
	var per []faultCounters
	if err := f.objs.Stats.Lookup(uint32(0), &per); err != nil {
		t.Fatalf("per-CPU stats: %v", err)
	}
	return per
}

// runFault runs the program once on pkt and returns the verdict and the
// change in the counters.
func runFault(t testing.TB, f *Fault, pkt []byte) (uint32, FaultStats) {
	t.Helper()
	before := faultStats(t, f)
	verdict, err := f.Program().Run(&ebpf.RunOptions{Data: pkt, Repeat: 1})
	if err != nil {
		t.Fatalf("run on %d bytes: %v", len(pkt), err)
	}
	return verdict, faultStats(t, f).sub(before)
}

// fate is what one run does: its verdict and counters.
type fate int

const (
	ignored    fate = iota + 1 // not eligible: passed
	spared                     // eligible, passed
	faultDrops                 // eligible, dropped
)

func (o fate) String() string { return [...]string{"?", "ignored", "spared", "dropped"}[o] }

func (o fate) verdict() uint32 {
	if o == faultDrops {
		return xdpDrop
	}
	return xdpPass
}

func (o fate) stats() FaultStats {
	switch o {
	case ignored:
		return FaultStats{Seen: 1, Passed: 1}
	case spared:
		return FaultStats{Seen: 1, Eligible: 1, Passed: 1}
	}
	return FaultStats{Seen: 1, Eligible: 1, Dropped: 1}
}

func expectFate(t testing.TB, f *Fault, name string, pkt []byte, want fate) {
	t.Helper()
	verdict, delta := runFault(t, f, pkt)
	if verdict != want.verdict() || delta != want.stats() {
		t.Errorf("%s (%d bytes): verdict %d, counters %+v; want %s: verdict %d, counters %+v",
			name, len(pkt), verdict, delta, want, want.verdict(), want.stats())
	}
}

// within5Sigma reports whether k successes in n trials are within five
// standard deviations of the binomial mean n*p.
func within5Sigma(k, n uint64, p float64) bool {
	mean := float64(n) * p
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	return math.Abs(float64(k)-mean) <= 5*sigma
}

// modelDrops is how many of the first n draws of CPU cpu's generator,
// seeded with seed, drop a frame at rate: the Go model of fault.c.
func modelDrops(seed uint64, cpu int, n uint64, rate float64) uint64 {
	state, thr := faultSeed(seed, cpu), faultThreshold(rate)
	var k uint64
	for range n {
		if splitmix64(&state)>>32 < thr {
			k++
		}
	}
	return k
}

// TestSplitmix64 pins the Go generator to the reference implementation
// (prng.di.unimi.it/splitmix64.c, seeded with 1234567); fault.c is checked
// against the Go one by TestFaultSeeded.
func TestSplitmix64(t *testing.T) {
	state := uint64(1234567)
	for i, want := range []uint64{6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821} {
		if got := splitmix64(&state); got != want {
			t.Errorf("output %d: %d; want %d", i, got, want)
		}
	}
	if a, b := faultSeed(7, 0), faultSeed(7, 1); a == b || a == faultSeed(8, 0) {
		t.Errorf("faultSeed: CPUs or seeds share a start: %#x %#x %#x", a, b, faultSeed(8, 0))
	}
	for rate, want := range map[float64]uint64{0: 0, 1: 1 << 32, 0.5: 1 << 31, 0.25: 1 << 30} {
		if got := faultThreshold(rate); got != want {
			t.Errorf("faultThreshold(%v) = %#x; want %#x", rate, got, want)
		}
	}
}

// TestFaultSpec checks the embedded object against the Go side, without
// loading it.
func TestFaultSpec(t *testing.T) {
	spec, err := loadFault()
	if err != nil {
		t.Fatal(err)
	}
	if m := spec.Maps[faultMapSettings]; m == nil || m.Type != ebpf.Array || m.MaxEntries != 1 || m.ValueSize != 24 {
		t.Errorf("settings: %v; want a one-entry array of 24-byte values", m)
	}
	for _, name := range []string{faultMapRng, faultMapStats} {
		if m := spec.Maps[name]; m == nil || m.Type != ebpf.PerCPUArray || m.MaxEntries != 1 {
			t.Errorf("%s: %v; want a one-entry per-CPU array", name, m)
		}
	}
	if p := spec.Programs[faultProgSdxFault]; p == nil || p.Type != ebpf.XDP || p.License != "Dual BSD/GPL" {
		t.Errorf("sdx_fault: %v; want an XDP program, license Dual BSD/GPL", p)
	}
}

func TestFaultVerdicts(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	f := mustLoadFault(t)
	start := faultStats(t, f)
	sdx := frame{dport: testPort, payload: 16}
	other := frame{dport: testPort + 1, payload: 16}

	expectFate(t, f, "sdx, not configured", sdx.bytes(), ignored)

	configure(t, f, FaultConfig{Port: testPort, DropRate: 1})
	expectFate(t, f, "sdx, rate 1", sdx.bytes(), faultDrops)
	expectFate(t, f, "sdx with options and a tag, rate 1", frame{tags: []uint16{tpidQ}, ihl: 15, dport: testPort, payload: 16}.bytes(), faultDrops)
	expectFate(t, f, "sdx, no payload, rate 1", frame{dport: testPort}.bytes(), faultDrops)
	expectFate(t, f, "other port, rate 1", other.bytes(), ignored)
	expectFate(t, f, "TCP to the sdx port, rate 1", frame{proto: protoTCP, dport: testPort}.bytes(), ignored)
	expectFate(t, f, "ARP, rate 1", arpFrame(), ignored)
	expectFate(t, f, "IPv6 UDP to the sdx port, rate 1", ip6UDPFrame(testPort), ignored)
	expectFate(t, f, "fragment to the sdx port, rate 1", frame{dport: testPort, payload: 16, fragOff: ipMF}.bytes(), ignored)
	expectFate(t, f, "sdx cut short, rate 1", sdx.bytes()[:ethHLen+20+4], ignored)

	configure(t, f, FaultConfig{Port: testPort, DropRate: 0})
	expectFate(t, f, "sdx, rate 0", sdx.bytes(), spared)
	expectFate(t, f, "other port, rate 0", other.bytes(), ignored)

	// The port is settings, changed while loaded.
	configure(t, f, FaultConfig{Port: testPort + 1, DropRate: 1})
	expectFate(t, f, "old port after a change", sdx.bytes(), ignored)
	expectFate(t, f, "new port after a change", other.bytes(), faultDrops)

	if total := faultStats(t, f).sub(start); !total.balanced() {
		t.Errorf("counters do not add up: %+v", total)
	}
}

// TestFaultParsesLikeSteer runs the same frames, whole and cut at every
// length, through sdx_steer and sdx_fault: with every opcode chosen and
// rate 1, fault drops exactly the frames steer calls sdx frames.
func TestFaultParsesLikeSteer(t *testing.T) {
	testutil.Privileged(t)
	s := mustLoad(t, testPort)
	f := mustLoadFault(t)
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1})

	frames := map[string][]byte{
		"ARP":                 arpFrame(),
		"IPv6 UDP":            ip6UDPFrame(testPort),
		"sdx":                 frame{dport: testPort, payload: 16}.bytes(),
		"802.1Q sdx":          frame{tags: []uint16{tpidQ}, dport: testPort, payload: 16}.bytes(),
		"802.1ad IHL 15 sdx":  frame{tags: []uint16{tpidAD}, ihl: 15, dport: testPort, payload: 16}.bytes(),
		"QinQ sdx":            frame{tags: []uint16{tpidAD, tpidQ}, dport: testPort, payload: 16}.bytes(),
		"padded sdx":          frame{dport: testPort, payload: 2, pad: 6}.bytes(),
		"short UDP length":    frame{dport: testPort, payload: 16, udpLen: 8}.bytes(),
		"UDP length below 8":  frame{dport: testPort, payload: 16, udpLen: 7}.bytes(),
		"UDP length too long": frame{dport: testPort, payload: 16, udpLen: 8 + 17}.bytes(),
		"IP length too long":  frame{dport: testPort, payload: 16, totLen: 20 + 8 + 17}.bytes(),
		"IP length short":     frame{dport: testPort, payload: 16, totLen: 27}.bytes(),
		"IHL 4":               frame{dport: testPort, payload: 16, ihl: 4}.bytes(),
		"IP version 6":        frame{dport: testPort, payload: 16, version: 6}.bytes(),
		"last fragment":       frame{dport: testPort, payload: 16, fragOff: 3}.bytes(),
		"TCP":                 frame{dport: testPort, proto: protoTCP}.bytes(),
		"other port":          frame{dport: testPort + 1, payload: 16}.bytes(),
	}
	var sdxFrames int
	for name, pkt := range frames {
		for n := ethHLen; n <= len(pkt); n++ {
			cut := pkt[:n]
			sv, sd := run(t, s, cut)
			fv, fd := runFault(t, f, cut)
			isSdx := sd == nosocket.stats()
			want := ignored
			if isSdx {
				want = faultDrops
				sdxFrames++
			}
			if fv != want.verdict() || fd != want.stats() {
				t.Errorf("%s cut to %d: steer verdict %d, counters %+v; fault verdict %d, counters %+v; want %s",
					name, n, sv, sd, fv, fd, want)
			}
		}
	}
	// The five whole sdx frames, and the padded one cut anywhere in its
	// six bytes of padding.
	if sdxFrames != 11 {
		t.Errorf("%d frames were sdx frames; want 11", sdxFrames)
	}
}

func TestFaultOpcodes(t *testing.T) {
	testutil.Privileged(t)
	f := mustLoadFault(t)
	start := faultStats(t, f)
	sdx := frame{dport: testPort, payload: 16}
	tagged := frame{tags: []uint16{tpidQ}, ihl: 7, dport: testPort, payload: 16}

	configure(t, f, FaultConfig{Port: testPort, DropRate: 1, Opcodes: []uint8{opAck}})
	expectFate(t, f, "ack, acks chosen", sdx.withOpcode(opAck), faultDrops)
	expectFate(t, f, "tagged ack with options, acks chosen", tagged.withOpcode(opAck), faultDrops)
	expectFate(t, f, "data, acks chosen", sdx.withOpcode(opData), ignored)
	expectFate(t, f, "tagged data with options, acks chosen", tagged.withOpcode(opData), ignored)
	expectFate(t, f, "reset, acks chosen", sdx.withOpcode(opReset), ignored)
	expectFate(t, f, "opcode 37, acks chosen", sdx.withOpcode(37), ignored)
	expectFate(t, f, "opcode 255, acks chosen", sdx.withOpcode(255), ignored)
	expectFate(t, f, "ack to another port, acks chosen", frame{dport: testPort + 1, payload: 16}.withOpcode(opAck), ignored)
	// A datagram without an opcode byte has no opcode to choose.
	expectFate(t, f, "one payload byte, acks chosen", frame{dport: testPort, payload: 1}.bytes(), ignored)
	expectFate(t, f, "no payload, acks chosen", frame{dport: testPort}.bytes(), ignored)
	// The opcode byte in the frame but past the UDP length is not the
	// datagram's.
	expectFate(t, f, "opcode beyond the UDP length", frame{dport: testPort, payload: 16, udpLen: 9}.withOpcode(opAck), ignored)

	// Connect replies: accept and reject.
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1, Opcodes: []uint8{opAccept, opReject}})
	for op := range byte(40) {
		want := ignored
		if op == opAccept || op == opReject {
			want = faultDrops
		}
		expectFate(t, f, fmt.Sprintf("opcode %d, connect replies chosen", op), sdx.withOpcode(op), want)
	}

	// The ends of the mask.
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1, Opcodes: []uint8{0, 31}})
	expectFate(t, f, "opcode 0 chosen", sdx.withOpcode(0), faultDrops)
	expectFate(t, f, "opcode 31 chosen", sdx.withOpcode(31), faultDrops)
	expectFate(t, f, "opcode 1, 0 and 31 chosen", sdx.withOpcode(1), ignored)
	expectFate(t, f, "opcode 32, 0 and 31 chosen", sdx.withOpcode(32), ignored)

	// No opcodes: all of them, beyond 31 too.
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1})
	expectFate(t, f, "opcode 200, all chosen", sdx.withOpcode(200), faultDrops)
	expectFate(t, f, "no payload, all chosen", frame{dport: testPort}.bytes(), faultDrops)

	if total := faultStats(t, f).sub(start); !total.balanced() {
		t.Errorf("counters do not add up: %+v", total)
	}

	for _, c := range []FaultConfig{
		{Port: testPort, Opcodes: []uint8{32}},
		{Port: testPort, DropRate: -0.01},
		{Port: testPort, DropRate: 1.01},
		{Port: testPort, DropRate: math.NaN()},
		{Port: testPort, DropRate: math.Inf(1)},
	} {
		if err := f.Configure(c); err == nil {
			t.Errorf("Configure(%+v): no error", c)
		}
	}
	if err := f.Configure(FaultConfig{DropRate: 1}); !errors.Is(err, ErrPort) {
		t.Errorf("Configure with port 0: %v; want ErrPort", err)
	}
	// A refused configuration leaves the one before it in place.
	expectFate(t, f, "opcode 200 after refused settings", sdx.withOpcode(200), faultDrops)
}

func TestFaultDropNext(t *testing.T) {
	testutil.Privileged(t)
	f := mustLoadFault(t)
	sdx := frame{dport: testPort, payload: 16}

	configure(t, f, FaultConfig{Port: testPort, DropNext: 3, Opcodes: []uint8{opReset}})
	expectFate(t, f, "reset 1 of the burst", sdx.withOpcode(opReset), faultDrops)
	// Frames that are not eligible do not use up the burst.
	expectFate(t, f, "data during the burst", sdx.withOpcode(opData), ignored)
	expectFate(t, f, "other port during the burst", frame{dport: testPort + 1, payload: 16}.withOpcode(opReset), ignored)
	expectFate(t, f, "reset 2 of the burst", sdx.withOpcode(opReset), faultDrops)
	expectFate(t, f, "reset 3 of the burst", sdx.withOpcode(opReset), faultDrops)
	expectFate(t, f, "reset after the burst, rate 0", sdx.withOpcode(opReset), spared)
	expectFate(t, f, "reset after the burst, rate 0, again", sdx.withOpcode(opReset), spared)

	// Configure rearms it; after it, the rate decides again.
	configure(t, f, FaultConfig{Port: testPort, DropNext: 1, DropRate: 1})
	expectFate(t, f, "burst of 1", sdx.bytes(), faultDrops)
	expectFate(t, f, "after the burst, rate 1", sdx.bytes(), faultDrops)

	// A burst larger than one run's worth, in one BPF_PROG_TEST_RUN.
	configure(t, f, FaultConfig{Port: testPort, DropNext: 1000})
	before := faultStats(t, f)
	// A signal can interrupt a repeated run part way; the run is then
	// started again, so the baseline and the burst are set again too.
	rearm := func() {
		configure(t, f, FaultConfig{Port: testPort, DropNext: 1000})
		before = faultStats(t, f)
	}
	if _, err := f.Program().Run(&ebpf.RunOptions{Data: sdx.bytes(), Repeat: 1500, Reset: rearm}); err != nil {
		t.Fatal(err)
	}
	if d := faultStats(t, f).sub(before); d != (FaultStats{Seen: 1500, Eligible: 1500, Dropped: 1000, Passed: 500}) {
		t.Errorf("burst of 1000 over 1500 frames: %+v; want 1000 dropped, 500 passed", d)
	}
}

// TestFaultRate runs 100000 eligible frames at several rates and checks the
// drops against the binomial distribution, and the extremes exactly.
func TestFaultRate(t *testing.T) {
	testutil.Privileged(t)
	f := mustLoadFault(t)
	const n = 100000
	pkt := frame{dport: testPort, payload: 64}.bytes()
	for _, rate := range []float64{0, 0.001, 0.01, 0.05, 0.2, 0.5, 0.9, 1} {
		configure(t, f, FaultConfig{Port: testPort, DropRate: rate, Seed: 42})
		before := faultStats(t, f)
		// A signal can interrupt a repeated run part way; it is then run
		// again from the start, so count from there.
		rebase := func() { before = faultStats(t, f) }
		if _, err := f.Program().Run(&ebpf.RunOptions{Data: pkt, Repeat: n, Reset: rebase}); err != nil {
			t.Fatal(err)
		}
		d := faultStats(t, f).sub(before)
		t.Logf("rate %v: %d of %d dropped (%.4f)", rate, d.Dropped, n, float64(d.Dropped)/n)
		if d.Seen != n || d.Eligible != n || !d.balanced() {
			t.Errorf("rate %v: counters %+v; want %d seen, all eligible, balanced", rate, d, n)
		}
		switch rate {
		case 0, 1:
			if want := uint64(rate * n); d.Dropped != want {
				t.Errorf("rate %v: %d dropped; want exactly %d", rate, d.Dropped, want)
			}
		default:
			if !within5Sigma(d.Dropped, n, rate) {
				t.Errorf("rate %v: %d of %d dropped, more than 5 standard deviations (%.1f) from %.0f",
					rate, d.Dropped, n, math.Sqrt(n*rate*(1-rate)), n*rate)
			}
		}
	}
}

// TestFaultSeeded checks that sdx_fault draws exactly what the Go model
// draws: for each run it finds the CPU that ran it by the per-CPU
// counters, and compares the verdict with that CPU's next model draw. So
// the same seed gives the same drops, and another seed others.
func TestFaultSeeded(t *testing.T) {
	testutil.Privileged(t)
	f := mustLoadFault(t)
	const frames, rate = 2000, 0.3
	sdx := frame{dport: testPort, payload: 16}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}

	// sequence runs frames eligible frames after configuring seed, with
	// an ineligible frame and a burst of one mixed in, checks each verdict
	// against the model, and returns what each CPU's draws decided, in
	// order.
	sequence := func(seed uint64) [][]bool {
		var st []faultRngState
		configure(t, f, FaultConfig{Port: testPort, DropRate: rate, Seed: seed, Opcodes: []uint8{opData}})
		if err := f.objs.Rng.Lookup(uint32(0), &st); err != nil {
			t.Fatal(err)
		}
		for cpu := range st {
			if want := faultSeed(seed, cpu); st[cpu].State != want {
				t.Fatalf("seed %d: CPU %d starts at %#x; want %#x", seed, cpu, st[cpu].State, want)
			}
		}
		drops := make([][]bool, ncpu)
		model := make([]uint64, ncpu)
		for cpu := range model {
			model[cpu] = faultSeed(seed, cpu)
		}
		// Run every frame on one CPU, so that each seed's passes share
		// CPUs to compare draw by draw (a test run executes on the
		// calling CPU).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var orig, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &orig); err != nil {
			t.Fatal(err)
		}
		one.Set(0)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			t.Fatal(err)
		}
		defer unix.SchedSetaffinity(0, &orig)
		for i := range frames {
			if i == frames/2 {
				// Neither a frame that is not eligible nor a burst moves
				// the sequence off the model: the one takes no draw, the
				// other takes its draw too.
				expectFate(t, f, "ack, data chosen", sdx.withOpcode(opAck), ignored)
				if err := f.objs.Settings.Update(uint32(0), &faultConfig{DropNext: 1, Threshold: faultThreshold(rate), Opcodes: 1 << opData, Port: testPort}, ebpf.UpdateLock); err != nil {
					t.Fatal(err)
				}
			}
			before := perCPU(t, f)
			verdict, err := f.Program().Run(&ebpf.RunOptions{Data: sdx.withOpcode(opData), Repeat: 1})
			if err != nil {
				t.Fatal(err)
			}
			after := perCPU(t, f)
			cpu := -1
			for c := range after {
				if after[c].Eligible != before[c].Eligible {
					cpu = c
				}
			}
			if cpu < 0 {
				t.Fatalf("frame %d: no CPU counted it", i)
			}
			drawn := splitmix64(&model[cpu])>>32 < faultThreshold(rate)
			want := drawn || i == frames/2
			if got := verdict == xdpDrop; got != want {
				t.Fatalf("seed %d, frame %d on CPU %d (its draw %d): dropped %v; the model says %v",
					seed, i, cpu, len(drops[cpu]), got, want)
			}
			drops[cpu] = append(drops[cpu], drawn)
		}
		return drops
	}

	// Which CPU runs a frame is the scheduler's choice, so the passes are
	// compared CPU by CPU, draw by draw.
	first, again, other := sequence(7), sequence(7), sequence(8)
	var dropped int
	for cpu := range ncpu {
		n := min(len(first[cpu]), len(again[cpu]))
		for i := range n {
			if first[cpu][i] != again[cpu][i] {
				t.Errorf("seed 7, CPU %d, draw %d: dropped %v, then %v", cpu, i, first[cpu][i], again[cpu][i])
			}
		}
		for _, d := range first[cpu] {
			if d {
				dropped++
			}
		}
	}
	if !within5Sigma(uint64(dropped), frames, rate) {
		t.Errorf("seed 7: %d of %d dropped at rate %v", dropped, frames, rate)
	}
	same := true
	for cpu := range ncpu {
		n := min(len(first[cpu]), len(other[cpu]))
		for i := range n {
			same = same && first[cpu][i] == other[cpu][i]
		}
	}
	if same {
		t.Errorf("seeds 7 and 8 gave the same drops")
	}
}

func TestFaultClose(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	f, err := LoadFault()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if _, err := f.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats after Close: %v; want ErrClosed", err)
	}
	if err := f.Configure(FaultConfig{Port: testPort}); !errors.Is(err, ErrClosed) {
		t.Errorf("Configure after Close: %v; want ErrClosed", err)
	}
}

func listenUDP(t *testing.T, h *testbed.Host, port uint16) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.Addr, port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receiver counts, in its own goroutine, the datagrams c receives, by
// their first byte.
type receiver struct {
	byFirst [256]atomic.Uint64
	done    chan struct{}
}

func receive(t *testing.T, c *net.UDPConn) *receiver {
	r := &receiver{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return // closed
			}
			if n > 0 {
				r.byFirst[buf[0]].Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFaultOnHop sends kernel UDP from A to B through sdx_fault on the hop
// (testbed.Hop),
// with sdx_steer attached to both ends as in real use: the drops match the
// rate and the seeded model CPU by CPU, other ports lose nothing, and
// every counter on the way adds up.
func TestFaultOnHop(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	bed := testbed.NewHop(t, testbed.HopOptions{})

	// sdx_steer on both ends, native, with no socket registered: it hands
	// sdx frames to the kernel (NoSocket), where the UDP sockets get them.
	steerA, steerB := mustLoad(t, testPort), mustLoad(t, testPort)
	for _, c := range []struct {
		h *testbed.Host
		s *Steer
	}{{&bed.A, steerA}, {&bed.B, steerB}} {
		l, mode := attachIn(t, c.h, c.s.Program(), c.h.Index, ModeNative)
		t.Cleanup(func() { l.Close() })
		if mode != ModeNative {
			t.Fatalf("steer on %s: %s", c.h.If, mode)
		}
	}
	f := mustLoadFault(t)
	var links []link.Link
	for _, p := range []*testbed.Host{&bed.RA, &bed.RB} {
		l, mode := attachIn(t, p, f.Program(), p.Index)
		links = append(links, l)
		t.Cleanup(func() { l.Close() })
		if mode != ModeNative {
			t.Errorf("fault on %s: %s; want native", p.If, mode)
		}
	}

	sdxRx := receive(t, listenUDP(t, &bed.B, testPort))
	otherRx := receive(t, listenUDP(t, &bed.B, testPort+1))
	tx := listenUDP(t, &bed.A, 0)
	send := func(port uint16, first, op byte) {
		t.Helper()
		msg := make([]byte, 64)
		msg[0], msg[sdxOpcodeOff] = first, op
		if _, err := tx.WriteToUDPAddrPort(msg, netip.AddrPortFrom(bed.B.Addr, port)); err != nil {
			t.Fatal(err)
		}
	}
	// Resolve the neighbours before counting anything.
	send(testPort+1, 0, 0)
	waitFor(t, "the first datagram", func() bool { return otherRx.byFirst[0].Load() == 1 })

	// 1. Loss at 20% on the sdx port, none on the other, in batches small
	// enough for veth's XDP ring (256 frames), each one waited for.
	const n, batch, rate, seed = 4000, 50, 0.2, 99
	configure(t, f, FaultConfig{Port: testPort, DropRate: rate, Seed: seed})
	st0, sa0, sb0 := faultStats(t, f), stats(t, steerA), stats(t, steerB)
	per0 := perCPU(t, f)
	start := time.Now()
	for sent := batch; sent <= n; sent += batch {
		for range batch {
			send(testPort, 1, opData)
			send(testPort+1, 1, opData)
		}
		waitFor(t, fmt.Sprintf("%d frames to reach the hop", sent), func() bool {
			return faultStats(t, f).Eligible-st0.Eligible == uint64(sent)
		})
		d := faultStats(t, f).sub(st0)
		waitFor(t, fmt.Sprintf("%d datagrams at B", sent), func() bool {
			return sdxRx.byFirst[1].Load() == d.Eligible-d.Dropped && otherRx.byFirst[1].Load() == uint64(sent)
		})
	}
	d := faultStats(t, f).sub(st0)
	got := sdxRx.byFirst[1].Load()
	t.Logf("%d sdx datagrams at %v: %d dropped (%.4f), %d received, in %v; fault counters %+v",
		n, rate, d.Dropped, float64(d.Dropped)/n, got, time.Since(start).Round(time.Millisecond), d)
	if d.Eligible != n || got != n-d.Dropped || !d.balanced() {
		t.Errorf("fault counters %+v, %d received; want %d eligible, received + dropped = %d", d, got, n, n)
	}
	if !within5Sigma(d.Dropped, n, rate) {
		t.Errorf("%d of %d dropped: more than 5 standard deviations from %v", d.Dropped, n, rate*n)
	}
	// Each CPU dropped exactly what the model says of its first draws.
	per := perCPU(t, f)
	for cpu := range per {
		drew := per[cpu].Eligible - per0[cpu].Eligible
		dropped := per[cpu].Dropped - per0[cpu].Dropped
		if want := modelDrops(seed, cpu, drew, rate); dropped != want {
			t.Errorf("CPU %d: %d of %d draws dropped; the model says %d", cpu, dropped, drew, want)
		}
	}
	// B's steer handed every datagram that passed the hop to the kernel;
	// A's saw none of them.
	sb, sa := stats(t, steerB).sub(sb0), stats(t, steerA).sub(sa0)
	t.Logf("steer at B %+v, at A %+v", sb, sa)
	if sb.NoSocket != got || sb.Passed < n || sb.Redirected != 0 || sb.Malformed != 0 || !sb.balanced() {
		t.Errorf("steer at B: %+v; want %d nosocket, at least %d passed", sb, got, n)
	}
	if sa.NoSocket != 0 || !sa.balanced() {
		t.Errorf("steer at A: %+v; want no sdx frames", sa)
	}

	// 2. Acks only, all of them, changed while attached: data still flows.
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1, Opcodes: []uint8{opAck}})
	st1 := faultStats(t, f)
	for range batch {
		send(testPort, 2, opAck)
		send(testPort, 3, opData)
	}
	waitFor(t, "data datagrams past dropped acks", func() bool { return sdxRx.byFirst[3].Load() == batch })
	if d := faultStats(t, f).sub(st1); d.Eligible != batch || d.Dropped != batch {
		t.Errorf("acks chosen at rate 1: %+v; want every ack eligible and dropped", d)
	}
	if acks := sdxRx.byFirst[2].Load(); acks != 0 {
		t.Errorf("%d acks reached B", acks)
	}

	// 3. Everything to the sdx port dropped: the host's own traffic
	// (ICMP, ARP, other UDP ports) is untouched.
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1})
	out, err := exec.Command("ip", "netns", "exec", bed.A.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", bed.B.Addr.String()).CombinedOutput()
	if err != nil {
		t.Errorf("ping across the hop while every sdx frame is dropped: %v\n%s", err, out)
	}
	if err := testbed.IP("-n", bed.A.NS, "neigh", "flush", "dev", bed.A.If); err != nil {
		t.Fatal(err)
	}
	send(testPort+1, 4, 0)
	waitFor(t, "UDP on another port after an ARP flush", func() bool { return otherRx.byFirst[4].Load() == 1 })

	// Leaving the hop: the links go, the program and maps with them.
	for _, l := range links {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitNoXDP(t, bed.RA.NS, bed.RA.If)
	waitNoXDP(t, bed.RB.NS, bed.RB.If)
	if shown := testutil.XDPShown(t, bed.B.NS, bed.B.If); !strings.Contains(shown, "xdp") {
		t.Errorf("steer left B with the hop's program: %q", shown)
	}
	sent := sdxRx.byFirst[5].Load()
	send(testPort, 5, opData)
	waitFor(t, "sdx datagrams with the hop detached", func() bool { return sdxRx.byFirst[5].Load() == sent+1 })
}

// TestFaultCoexistence records the kernel's rules that decide where
// sdx_fault can run: one XDP program per interface, whatever the mode, so
// it cannot share an interface with sdx_steer (see the package
// documentation).
func TestFaultCoexistence(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{})
	s := mustLoad(t, testPort)
	f := mustLoadFault(t)
	for _, c := range []struct {
		steer, fault Mode
		want         error
	}{
		// "Native and generic XDP can't be active at the same time".
		{ModeNative, ModeGeneric, syscall.EEXIST},
		{ModeGeneric, ModeNative, syscall.EEXIST},
		// A bpf_link's program cannot be replaced.
		{ModeNative, ModeNative, syscall.EBUSY},
	} {
		if err := bed.A.Do(func() error {
			l, _, err := Attach(s.Program(), bed.A.Index, c.steer)
			if err != nil {
				return err
			}
			defer l.Close()
			l2, _, err := Attach(f.Program(), bed.A.Index, c.fault)
			if err == nil {
				l2.Close()
				return fmt.Errorf("fault %s beside steer %s: attached", c.fault, c.steer)
			}
			if !errors.Is(err, c.want) {
				return fmt.Errorf("fault %s beside steer %s: %w; want %v", c.fault, c.steer, err, c.want)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
}

// BenchmarkFault runs the program through BPF_PROG_TEST_RUN. ns/frame is
// the kernel's own timing of the program alone.
func BenchmarkFault(b *testing.B) {
	testutil.Privileged(b)
	f := mustLoadFault(b)
	configure(b, f, FaultConfig{Port: testPort, DropRate: 0.05, Opcodes: []uint8{opData, opAck}})
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"sdx-data", frame{dport: testPort, payload: 64}.withOpcode(opData)},
		{"sdx-reset", frame{dport: testPort, payload: 64}.withOpcode(opReset)},
		{"other-port", frame{dport: testPort + 1, payload: 64}.bytes()},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			opts := &ebpf.RunOptions{Data: c.pkt, Repeat: 1}
			for b.Loop() {
				if _, err := f.Program().Run(opts); err != nil {
					b.Fatal(err)
				}
			}
			_, perFrame, err := f.Program().Benchmark(c.pkt, 10000, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(perFrame.Nanoseconds()), "ns/frame")
		})
	}
}
