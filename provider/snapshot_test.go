package provider

import (
	"errors"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/memnet"
)

// After streams both ways over a network that loses, duplicates and
// reorders frames (seeded), each provider's per-connection retransmission
// counts add up to its totals, and every connection's bytes_acked and
// bytes_received equal what was written to it and to its peer.
func TestConnStatsAddUp(t *testing.T) {
	testutil.CheckGoroutines(t)
	const size = 2 << 20
	tn := newTestNet(t, 24, memnet.Faults{Loss: 0.05, Dup: 0.02, Reorder: 0.02}, 2, nil)
	l := tn.listener(1, 80, 4)
	type pair struct{ a, b Socket }
	var pairs []pair
	for range 3 {
		a, b := tn.conn(l, 80)
		pairs = append(pairs, pair{a, b})
	}
	for i, pr := range pairs {
		stream(t, tn.ps[0], tn.ps[1], pr.a, pr.b, size, uint64(10+i), true)
	}
	// The last acks may still be on their way: wait (bounded) until
	// nothing is in flight on either side.
	var snaps [2][]ConnStats
	deadline := time.Now().Add(10 * time.Second)
	for {
		settled := true
		for i, p := range tn.ps {
			s, err := p.ConnStats()
			if err != nil {
				t.Fatal(err)
			}
			snaps[i] = s
			for _, c := range s {
				if c.Peer.IsValid() && (c.SendQ != 0 || c.BytesAcked != size) {
					settled = false
				}
			}
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled after 10s: %+v", snaps)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, p := range tn.ps {
		st := p.Stats()
		var rtx, fast, rto, segs uint64
		conns := 0
		for _, c := range snaps[i] {
			if !c.Peer.IsValid() {
				if c.State != stateListening.String() || c.Local.Port() != 80 {
					t.Errorf("host %d: endpoint without a peer: %+v", i, c)
				}
				continue
			}
			conns++
			rtx += c.Retransmits
			fast += c.FastRetransmits
			rto += c.RTOExpiries
			segs += c.SegsOut
			if c.BytesAcked != size || c.BytesReceived != size {
				t.Errorf("host %d conn %d: bytes_acked %d, bytes_received %d; want %d each", i, c.ID, c.BytesAcked, c.BytesReceived, size)
			}
			if c.BytesSent < size || c.SegsIn == 0 || c.MinRTT <= 0 || c.MinRTT > c.RTT+4*c.RTTVar || c.State != "Established" {
				t.Errorf("host %d conn %d: implausible figures %+v", i, c.ID, c)
			}
			if c.LastSend < 0 || c.LastRecv < 0 || c.LastAck < 0 {
				t.Errorf("host %d conn %d: never sent, heard or acked: %+v", i, c.ID, c)
			}
		}
		if conns != len(pairs) {
			t.Errorf("host %d: %d connections in the snapshot, want %d", i, conns, len(pairs))
		}
		if rtx != st.Retransmits || fast != st.FastRetransmits || rto != st.RTOExpiries || segs != st.DataOut {
			t.Errorf("host %d: connections sum to retransmits %d fast %d rto %d segments %d; the provider counts %d %d %d %d",
				i, rtx, fast, rto, segs, st.Retransmits, st.FastRetransmits, st.RTOExpiries, st.DataOut)
		}
		if st.Retransmits == 0 {
			t.Errorf("host %d: no retransmission at 5%% loss", i)
		}
		t.Logf("host %d: %d connections, retransmits %d (fast marks %d, timer expiries %d)", i, conns, rtx, fast, rto)
	}
}

// The snapshot shows what is queued: a written, unread message is the
// peer's Recv-Q; after Cleanup the request fails.
func TestConnStatsQueues(t *testing.T) {
	tn := newTestNet(t, 25, memnet.Faults{}, 2, nil)
	l := tn.listener(1, 81, 4)
	a, _ := tn.conn(l, 81)
	msg := make([]byte, 3000)
	if _, err := tn.ps[0].Send(a, msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := tn.ps[1].ConnStats()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		for _, c := range s {
			got += c.RecvQ
		}
		if got == len(msg) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Recv-Q %d, want %d: %+v", got, len(msg), s)
		}
		time.Sleep(time.Millisecond)
	}
	tn.ps[0].Cleanup()
	if _, err := tn.ps[0].ConnStats(); !errors.Is(err, ErrNetDown) {
		t.Fatalf("ConnStats after Cleanup: %v, want ErrNetDown", err)
	}
}
