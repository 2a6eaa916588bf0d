package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// cloneMark is disorder.c's CLONE_MARK.
const cloneMark = 0x5d0c1013

// skbCtx is the prefix of struct __sk_buff that BPF_PROG_TEST_RUN takes
// and gives back: the kernel accepts mark and priority in, and zeros
// elsewhere in this prefix.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto uint32
	Priority, IngressIfindex, Ifindex, TcIndex                                  uint32
	Cb                                                                          [5]uint32
	_                                                                           [192 - 17*4]byte // the rest of the kernel's 192 bytes
}

func (s DisorderStats) sub(o DisorderStats) DisorderStats {
	return DisorderStats{
		Seen: s.Seen - o.Seen, Clones: s.Clones - o.Clones, Judged: s.Judged - o.Judged,
		Eligible: s.Eligible - o.Eligible, Duplicated: s.Duplicated - o.Duplicated,
		DupFailed: s.DupFailed - o.DupFailed, Delayed: s.Delayed - o.Delayed,
	}
}

func mustLoadDisorder(t testing.TB) *Disorder {
	t.Helper()
	d, err := LoadDisorder()
	if err != nil {
		t.Fatalf("LoadDisorder: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return d
}

func disorderStats(t testing.TB, d *Disorder) DisorderStats {
	t.Helper()
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// runDisorder runs the program once on pkt with the mark and priority in
// ctx, and returns the context it left and the change in the counters. It
// may run on a thread of another namespace, so it returns errors rather
// than end the test.
func runDisorder(d *Disorder, pkt []byte, in skbCtx) (skbCtx, DisorderStats, error) {
	before, err := d.Stats()
	if err != nil {
		return skbCtx{}, DisorderStats{}, err
	}
	var out skbCtx
	verdict, err := d.Program().Run(&ebpf.RunOptions{Data: pkt, Context: in, ContextOut: &out, Repeat: 1})
	if err != nil {
		return out, DisorderStats{}, fmt.Errorf("run on %d bytes: %w", len(pkt), err)
	}
	if verdict != 0 {
		return out, DisorderStats{}, fmt.Errorf("verdict %d; want TC_ACT_OK", verdict)
	}
	after, err := d.Stats()
	return out, after.sub(before), err
}

// TestDisorderVerdicts runs sdx_disorder on crafted frames: what is not
// an eligible sdx frame passes untouched, an eligible one is delayed
// (priority set to the class) and duplicated at rate 1, neither at rate
// 0, and the program's own copy (the clone mark) passes once, unmarked.
// The copies go out of the test namespace's loopback, where the program
// does not run: TestDisorderOnHop sees them come back.
func TestDisorderVerdicts(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{Subnet: 60})
	d := mustLoadDisorder(t)
	const class = 1<<16 | 2
	sdx := frame{dport: testPort, payload: 64}.withOpcode(opData)
	ack := frame{dport: testPort, payload: 64}.withOpcode(opAck)
	other := frame{dport: testPort + 1, payload: 64}.bytes()
	large := frame{dport: testPort, payload: 3000}.withOpcode(opData) // test runs take at most a page
	err := bed.A.Do(func() error {
		for _, c := range []struct {
			name      string
			cfg       DisorderConfig
			pkt       []byte
			in        skbCtx
			wantPrio  uint32
			wantMark  uint32
			wantStats DisorderStats
		}{
			{"other port", DisorderConfig{Port: testPort, DupRate: 1, DelayRate: 1, DelayClass: class}, other, skbCtx{Priority: 7}, 7, 0,
				DisorderStats{Seen: 1, Judged: 1}},
			{"nothing asked", DisorderConfig{Port: testPort}, sdx, skbCtx{}, 0, 0,
				DisorderStats{Seen: 1, Judged: 1, Eligible: 1}},
			{"delayed", DisorderConfig{Port: testPort, DelayRate: 1, DelayClass: class}, sdx, skbCtx{Mark: 9}, class, 9,
				DisorderStats{Seen: 1, Judged: 1, Eligible: 1, Delayed: 1}},
			{"duplicated and delayed", DisorderConfig{Port: testPort, DupRate: 1, DelayRate: 1, DelayClass: class}, sdx, skbCtx{Mark: 9}, class, 9,
				DisorderStats{Seen: 1, Judged: 1, Eligible: 1, Duplicated: 1, Delayed: 1}},
			{"large duplicated", DisorderConfig{Port: testPort, DupRate: 1}, large, skbCtx{}, 0, 0,
				DisorderStats{Seen: 1, Judged: 1, Eligible: 1, Duplicated: 1}},
			{"opcode not chosen", DisorderConfig{Port: testPort, DupRate: 1, DelayRate: 1, DelayClass: class, Opcodes: []uint8{opData}}, ack, skbCtx{}, 0, 0,
				DisorderStats{Seen: 1, Judged: 1}},
			{"opcode chosen", DisorderConfig{Port: testPort, DelayRate: 1, DelayClass: class, Opcodes: []uint8{opAck}}, ack, skbCtx{}, class, 0,
				DisorderStats{Seen: 1, Judged: 1, Eligible: 1, Delayed: 1}},
			{"own copy", DisorderConfig{Port: testPort, DupRate: 1, DelayRate: 1, DelayClass: class}, sdx, skbCtx{Mark: cloneMark}, 0, 0,
				DisorderStats{Seen: 1, Clones: 1}},
		} {
			if err := d.Configure(c.cfg); err != nil {
				return err
			}
			out, st, err := runDisorder(d, c.pkt, c.in)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if out.Priority != c.wantPrio || out.Mark != c.wantMark || st != c.wantStats {
				t.Errorf("%s: priority %#x, mark %#x, counters %+v; want %#x, %#x, %+v",
					c.name, out.Priority, out.Mark, st, c.wantPrio, c.wantMark, c.wantStats)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDisorderConfigure checks the settings Configure refuses.
func TestDisorderConfigure(t *testing.T) {
	testutil.Privileged(t)
	d := mustLoadDisorder(t)
	for _, c := range []DisorderConfig{
		{},
		{Port: testPort, DupRate: 1.5},
		{Port: testPort, DelayRate: -1},
		{Port: testPort, DelayRate: 0.1},
		{Port: testPort, Opcodes: []uint8{32}},
	} {
		if err := d.Configure(c); err == nil {
			t.Errorf("Configure(%+v) succeeded", c)
		}
	}
	d.Close()
	if err := d.Configure(DisorderConfig{Port: testPort}); !errors.Is(err, ErrClosed) {
		t.Errorf("Configure after Close: %v; want ErrClosed", err)
	}
	if _, err := d.AttachEgress(1); !errors.Is(err, ErrClosed) {
		t.Errorf("AttachEgress after Close: %v; want ErrClosed", err)
	}
}

// htbClassPackets returns the packets htb's class 1:2 on the hop's port p
// has sent, and how often it was over its rate (held a frame back).
func htbClassPackets(t testing.TB, h *testbed.Hop, p *testbed.Host) (sent, overlimits uint64) {
	t.Helper()
	out, err := exec.Command("tc", "-n", h.R, "-s", "class", "show", "dev", p.If, "classid", "1:2").CombinedOutput()
	if err != nil {
		t.Fatalf("tc class show: %v\n%s", err, out)
	}
	// " Sent 1234 bytes 5 pkt (dropped 0, overlimits 3 requeues 0)"
	for _, line := range strings.Split(string(out), "\n") {
		var b, drop, req uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "Sent %d bytes %d pkt (dropped %d, overlimits %d requeues %d)", &b, &sent, &drop, &overlimits, &req); err == nil {
			return sent, overlimits
		}
	}
	t.Fatalf("no counters in:\n%s", out)
	return 0, 0
}

// TestDisorderOnHop sends numbered kernel UDP datagrams from A to B
// through sdx_disorder at the egress of the hop's port toward B, with
// htb's delay class under it: B receives every datagram, the duplicated
// ones twice, and some after datagrams sent later than them; the counts
// match the program's counters and htb's.
func TestDisorderOnHop(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	bed := testbed.NewHop(t, testbed.HopOptions{Subnet: 61})
	if err := bed.AddDelayClass(&bed.RB, 200*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	d := mustLoadDisorder(t)
	var l link.Link
	if err := bed.RB.Do(func() (err error) {
		l, err = d.AttachEgress(bed.RB.Index)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	rx := listenUDP(t, &bed.B, testPort)
	tx := listenUDP(t, &bed.A, 0)
	var (
		mu      sync.Mutex
		arrived []uint32 // sequence numbers in order of arrival
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := rx.Read(buf)
			if err != nil {
				return
			}
			if n >= 8 {
				mu.Lock()
				arrived = append(arrived, binary.BigEndian.Uint32(buf[4:]))
				mu.Unlock()
			}
		}
	}()
	defer func() { rx.Close(); <-done }()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(arrived) }

	send := func(seq uint32) {
		t.Helper()
		msg := make([]byte, 1200)
		msg[sdxOpcodeOff] = opData
		binary.BigEndian.PutUint32(msg[4:], seq)
		if _, err := tx.WriteToUDPAddrPort(msg, netip.AddrPortFrom(bed.B.Addr, testPort)); err != nil {
			t.Fatal(err)
		}
	}
	// Resolve the neighbours before the program counts anything.
	send(1 << 31)
	waitFor(t, "the first datagram", func() bool { return count() == 1 })

	const n, batch, seed = 2000, 20, 5
	if err := d.Configure(DisorderConfig{Port: testPort, DupRate: 0.1, DelayRate: 0.1, DelayClass: testbed.DelayClass, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	st0 := disorderStats(t, d)
	sent0, _ := htbClassPackets(t, bed, &bed.RB)
	for seq := uint32(0); seq < n; seq += batch {
		for i := range uint32(batch) {
			send(seq + i)
		}
		// Each batch is waited for at B, so that B's socket buffer holds
		// it whole.
		waitFor(t, fmt.Sprintf("datagram %d to reach the hop", seq+batch), func() bool {
			return disorderStats(t, d).Eligible-st0.Eligible == uint64(seq+batch)
		})
		dup := disorderStats(t, d).Duplicated - st0.Duplicated
		waitFor(t, fmt.Sprintf("datagram %d and the copies so far at B", seq+batch), func() bool {
			return uint64(count()) == 1+uint64(seq+batch)+dup
		})
	}
	st := disorderStats(t, d).sub(st0)
	sent, over := htbClassPackets(t, bed, &bed.RB)

	mu.Lock()
	got := arrived[1:]
	mu.Unlock()
	seen := make(map[uint32]int)
	late, highest := 0, int64(-1)
	for _, s := range got {
		seen[s]++
		if int64(s) < highest && seen[s] == 1 {
			late++ // first arrival after a datagram sent later
		}
		highest = max(highest, int64(s))
	}
	twice := 0
	for _, k := range seen {
		if k == 2 {
			twice++
		}
	}
	t.Logf("%d datagrams: counters %+v; B got %d (%d distinct, %d twice, %d overtaken); htb delay class sent %d, over its rate %d times",
		n, st, len(got), len(seen), twice, late, sent-sent0, over)
	// Judged counts the hop's other frames too (neighbour discovery, say).
	if st.Eligible != n || st.Judged < n || st.Clones != st.Duplicated || st.DupFailed != 0 || st.Seen != st.Judged+st.Clones {
		t.Errorf("counters %+v: want %d eligible, every copy made and passed once", st, n)
	}
	if !within5Sigma(st.Duplicated, n, 0.1) || !within5Sigma(st.Delayed, n, 0.1) {
		t.Errorf("%d duplicated, %d delayed of %d: not about 10%% each", st.Duplicated, st.Delayed, n)
	}
	if len(seen) != n || uint64(twice) != st.Duplicated {
		t.Errorf("B got %d distinct datagrams, %d twice; want %d, %d", len(seen), twice, n, st.Duplicated)
	}
	if sent-sent0 != st.Delayed || over == 0 {
		t.Errorf("htb's delay class sent %d frames, over its rate %d times; want the %d delayed, held back", sent-sent0, over, st.Delayed)
	}
	if late == 0 {
		t.Error("no datagram was overtaken: nothing was reordered")
	}
}
