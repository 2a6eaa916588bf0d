package provider

import (
	"testing"
	"time"
)

// FuzzEngine feeds arbitrary datagrams, as if from the connected peer's
// address, into an engine that holds a live connection and a listener. The
// seeds are real headers of that connection (its ids, token and sequence
// numbers, deterministic for the fixed seed), so mutations reach deep into
// the state machine. Nothing may panic; the buffer accounting must hold
// after every datagram; and after the dead-peer bound has passed in virtual
// time, each end of the connection is either still established with its
// live peer or failed with an error: no state waits for ever.
func FuzzEngine(f *testing.F) {
	v := newVNet(f, 1, Faults{}, fuzzEngineConfig(), 2)
	a, b := v.pair()
	for op := Opcode(0); op < 16; op++ {
		h := Header{Op: op, SrcPort: a.lport, DstPort: b.lport, SrcConn: a.id, DstConn: b.id,
			Token: a.token, Seq: a.sndNxt, Ack: a.rcvNxt, Window: 1 << 16}
		payload := []byte("fuzz payload")
		if op != OpData {
			payload = nil
		}
		f.Add(frameBatch(AppendDatagram(nil, &h, payload)))
		h.Token++ // a forged one
		f.Add(frameBatch(AppendDatagram(nil, &h, payload)))
	}
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, data []byte) {
		v := newVNet(t, 1, Faults{}, fuzzEngineConfig(), 2)
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
		for _, ep := range []*endpoint{a, b} {
			if ep.state != StateEstablished && ep.state != StateFailed {
				t.Fatalf("endpoint %d in %v after the dead-peer bound", ep.id, ep.state)
			}
			if ep.state == StateFailed && ep.err == nil {
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
