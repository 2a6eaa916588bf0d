package provider

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite FuzzEngine's seed corpus in testdata")

// FuzzEngine feeds arbitrary datagrams, as if from the connected peer's
// address, into an engine that holds a live connection and a listener. The
// seeds are real headers of that connection (its ids, token and sequence
// numbers, deterministic for the fixed seed), so mutations reach deep into
// the state machine. Nothing may panic; the buffer accounting must hold
// after every datagram; and after the dead-peer bound has passed in virtual
// time, each end of the connection is either still established with its
// live peer or failed with an error: no state waits for ever.
//
// The seed corpus is testdata/fuzz/FuzzEngine, written by fuzzEngineSeeds
// (TestFuzzEngineCorpus keeps the two in step).
func FuzzEngine(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		v := newVNet(t, 1, memnet.Faults{}, fuzzEngineConfig(), 2)
		a, b := v.pair()
		e := v.hosts[1]
		// data is a batch: each datagram is a length byte and that many bytes.
		for len(data) > 0 {
			n := min(int(data[0]), len(data)-1)
			dgram := append([]byte(nil), data[1:1+n]...)
			data = data[1+n:]
			e.now = v.now
			e.input(v.addr(0), dgram)
			checkPool(t, e)
			v.step()
			v.now += int64(10 * time.Microsecond)
		}
		// Both peers stay alive and keep polling past the dead-peer bound.
		end := v.now + 3*int64(fuzzEngineConfig().Timeout)
		for v.now < end {
			if !v.step() {
				v.advance()
			}
		}
		for _, h := range v.hosts {
			checkPool(t, h)
		}
		if l := v.hosts[1].ports[b.lport]; l == nil || len(l.ln.half) != 0 {
			t.Fatalf("listener %v: half-open connections outlived the dead-peer bound", l)
		}
		for _, ep := range []*endpoint{a, b} {
			if ep.state != stateEstablished && ep.state != stateFailed {
				t.Fatalf("endpoint %d in %v after the dead-peer bound", ep.id, ep.state)
			}
			if ep.state == stateFailed && ep.err == nil {
				t.Fatalf("endpoint %d failed without an error", ep.id)
			}
		}
	})
}

func fuzzEngineConfig() engineConfig {
	c := testEngineConfig()
	c.Timeout = time.Second
	return c
}

// frameBatch prefixes one datagram with its length, as FuzzEngine reads it.
func frameBatch(d []byte) []byte {
	if len(d) > 255 {
		d = d[:255]
	}
	return append([]byte{byte(len(d))}, d...)
}

// fuzzEngineSeeds returns FuzzEngine's seeds by name: a frame of every
// opcode (and some beyond) with the live connection's ids, token and
// sequence numbers, each also with a forged token, and sequences that
// lead into the state machine's corners. They depend on the engine's
// random draws for the fixed seed, hence TestFuzzEngineCorpus.
func fuzzEngineSeeds(tb testing.TB) map[string][]byte {
	v := newVNet(tb, 1, memnet.Faults{}, fuzzEngineConfig(), 2)
	a, b := v.pair()
	hdr := func(op wire.Opcode) wire.Header {
		return wire.Header{Op: op, SrcPort: a.lport, DstPort: b.lport, SrcConn: a.id, DstConn: b.id,
			Token: a.token, Seq: a.snd.sndNxt, Ack: a.rcv.rcvNxt, Window: 1 << 16, Flags: wire.FlagAck}
	}
	frame := func(h wire.Header, payload []byte) []byte { return frameBatch(wire.AppendDatagram(nil, &h, payload)) }
	// Connect and accept announce the sender's largest datagram.
	announce := make([]byte, wire.AnnounceLen)
	wire.PutAnnounce(announce, memnet.DefaultMTU)
	seeds := map[string][]byte{"empty": {0}}
	for op := wire.Opcode(0); op < 12; op++ {
		h := hdr(op)
		var payload []byte
		switch op {
		case wire.OpData:
			payload = []byte("fuzz payload")
		case wire.OpConnect, wire.OpAccept:
			payload = announce
		}
		name := op.String()
		if op == 0 || op >= wire.NumOpcodes {
			name = fmt.Sprintf("op%d", op)
		}
		seeds[name] = frame(h, payload)
		h.Token++
		seeds[name+"_forged"] = frame(h, payload)
	}
	// Data beyond a hole, then the hole filled, then the end of stream.
	d1, d2, fin := hdr(wire.OpData), hdr(wire.OpData), hdr(wire.OpDisconnect)
	d2.Seq = 8
	fin.Seq = 16
	seeds["data_hole_fin"] = bytes.Join([][]byte{frame(d2, []byte("89abcdef")), frame(d1, []byte("01234567")), frame(fin, nil)}, nil)
	// An ack with SACK blocks of data never sent.
	ack := hdr(wire.OpAck)
	ack.NSACK = 2
	ack.SACK[0] = wire.SACKBlock{Start: 100, End: 200}
	ack.SACK[1] = wire.SACKBlock{Start: 300, End: 400}
	seeds["ack_sack"] = frame(ack, nil)
	// A connect to the listener's port, then its cookie echoed back.
	c := wire.Header{Op: wire.OpConnect, SrcPort: a.lport + 1, DstPort: b.lport, SrcConn: 99, Token: 0x5eed, Window: 1 << 16}
	cc := c
	cc.Seq = 0x1234567
	seeds["connect_cookie"] = bytes.Join([][]byte{frame(c, announce), frame(cc, announce)}, nil)
	return seeds
}

const fuzzEngineCorpus = "testdata/fuzz/FuzzEngine"

// TestFuzzEngineCorpus checks that the committed seed corpus is what
// fuzzEngineSeeds makes today; -update-corpus rewrites it.
func TestFuzzEngineCorpus(t *testing.T) {
	seeds := fuzzEngineSeeds(t)
	if *updateCorpus {
		if err := os.RemoveAll(fuzzEngineCorpus); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(fuzzEngineCorpus, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range seeds {
		want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
		path := filepath.Join(fuzzEngineCorpus, name)
		if *updateCorpus {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("seed %s is missing or stale in %s (the engine's ids or tokens changed): run go test ./provider -run TestFuzzEngineCorpus -update-corpus", name, fuzzEngineCorpus)
		}
	}
	if entries, err := os.ReadDir(fuzzEngineCorpus); err == nil && len(entries) != len(seeds) {
		t.Errorf("%s has %d files; the seeds are %d", fuzzEngineCorpus, len(entries), len(seeds))
	}
}
