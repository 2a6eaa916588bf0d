package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"
)

// The request-response workloads: rr, the echo server, and the Pinger
// that other workloads (incast) measure a ping-pong with.

// rr: the client sends a message carrying its sequence number, waits for
// the server to send it back, and records the round trip.
func (r *runner) rr() error {
	size := r.s.Size
	if size < 8 {
		return fmt.Errorf("rr needs messages of at least 8 bytes")
	}
	c, s, err := r.sys.Pair(r.b)
	if err != nil {
		return err
	}
	defer closeAll(c, s)
	kind := r.sys.Kind()
	srv := r.server(func() error {
		if s == nil {
			return nil // the server end runs in another process
		}
		return echo(s, kind, size)
	})
	r.s.Hist = NewHist()
	part, err := r.part(size)
	if err != nil {
		return err
	}
	cli := r.client(false, func() error {
		defer c.CloseWrite() // a stream server sees EOF
		return r.rrClient(c, kind, size, part)
	})
	return r.finish(cli, srv)
}

// lossWait is how long an rr client over datagrams waits for an answer
// before counting the transaction lost.
const lossWait = 50 * time.Millisecond

// part is how an rr message of size bytes goes over the system: whole
// (0), or, over the floor (a Flooder) where it is longer than a frame, as
// frames of at most part bytes.
func (r *runner) part(size int) (int, error) {
	if _, ok := r.sys.(Flooder); !ok {
		return 0, nil
	}
	mtu, err := r.h.MTU()
	if err != nil {
		return 0, err
	}
	m := r.sys.MaxMessage(mtu)
	if size <= m {
		return 0, nil
	}
	n := (size + m - 1) / m
	return (size + n - 1) / n, nil
}

func (r *runner) rrClient(c Conn, kind Kind, size, part int) error {
	out := make([]byte, size)
	in := make([]byte, max(size, 64<<10))
	dc, _ := c.(DatagramConn)
	// The warm-up ends after Warmup transactions or a fifth of the limit,
	// whichever comes first; then up to Transactions are measured within
	// the limit.
	warmup, total := r.bud.Warmup, r.bud.Warmup+r.bud.Transactions
	var (
		t0, cpu0 = time.Now(), int64(0)
		last     = t0
	)
	for i := 0; i < total; i++ {
		if i < warmup && last.Sub(t0) > r.bud.Limit/5 {
			warmup, total = i, i+r.bud.Transactions
		}
		if i == warmup {
			var err error
			if cpu0, err = r.cpu(); err != nil {
				return err
			}
			t0 = time.Now()
			last = t0
		}
		// A lossy system (UDP on a loaded machine) may lose the first
		// transactions after the warm-up: it gets up to ten limits for
		// one to complete before the run gives up on it.
		if r.b.Stopped() || (i > warmup && last.Sub(t0) > r.bud.Limit && (r.s.Count > 0 || last.Sub(t0) > 10*r.bud.Limit)) {
			break
		}
		start := time.Now()
		ok, err := transact(c, dc, kind, out, in, uint64(i), start, part)
		if err != nil {
			return err
		}
		if !ok {
			if i >= warmup {
				r.s.Lost++
			}
			last = time.Now()
			continue
		}
		last = time.Now()
		if i >= warmup {
			r.s.Hist.RecordValue(last.Sub(start).Nanoseconds())
			r.s.Count++
		}
	}
	cpu1, err := r.cpu()
	if err != nil {
		return err
	}
	if r.s.Count == 0 {
		return fmt.Errorf("rr: no transaction completed within %v", 10*r.bud.Limit)
	}
	r.s.Elapsed, r.s.CPU = last.Sub(t0), time.Duration(cpu1-cpu0)
	return nil
}

// transact sends out carrying sequence number seq and waits for the echo
// in in. It reports false when a datagram system's answer did not come
// within lossWait of start. With part > 0 (the floor, a message longer
// than a frame) out goes as frames of at most part bytes, each carrying
// seq, with one kick, and the answer is those frames back.
func transact(c Conn, dc DatagramConn, kind Kind, out, in []byte, seq uint64, start time.Time, part int) (bool, error) {
	if part > 0 {
		return transactParts(c.(Batcher), dc, out, in, seq, start, part)
	}
	stamp(out, seq, len(out))
	if err := c.Send(out); err != nil {
		return false, err
	}
	if kind == Stream {
		if err := recvFull(c, in[:len(out)]); err != nil {
			return false, err
		}
		if got := binary.LittleEndian.Uint64(in); got != seq {
			return false, fmt.Errorf("rr: answer %d to transaction %d", got, seq)
		}
		return true, nil
	}
	return awaitEcho(dc, in, seq, start, len(out))
}

// awaitEcho receives datagrams into in until those carrying seq add up to
// n bytes, skipping late answers to earlier transactions. It reports
// false when they did not come within lossWait of start.
func awaitEcho(dc DatagramConn, in []byte, seq uint64, start time.Time, n int) (bool, error) {
	for got := 0; got < n; {
		k, err := dc.RecvUntil(in, start.Add(lossWait))
		if err == ErrTimeout {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if k >= 8 && binary.LittleEndian.Uint64(in) == seq {
			got += k
		}
	}
	return true, nil
}

// stamp begins p, a message or a frame of one, with the transaction's
// sequence number and, where it has room, the message's length n (for
// xsk-floor-sf's server).
func stamp(p []byte, seq uint64, n int) {
	binary.LittleEndian.PutUint64(p, seq)
	if len(p) >= 16 {
		binary.LittleEndian.PutUint64(p[8:], uint64(n))
	}
}

// transactParts is transact for a message sent as frames of part bytes,
// each stamped.
func transactParts(b Batcher, dc DatagramConn, out, in []byte, seq uint64, start time.Time, part int) (bool, error) {
	for off := 0; off < len(out); off += part {
		p := out[off:min(off+part, len(out))]
		stamp(p, seq, len(out))
		if err := b.Queue(p); err != nil {
			return false, err
		}
	}
	if err := b.Flush(); err != nil {
		return false, err
	}
	return awaitEcho(dc, in, seq, start, len(out))
}

// Pinger is a ping-pong driven one transaction at a time, for go test
// benchmarks: the server echoes on its own thread (pinned when the system
// spins); the caller is the client and pins its own thread.
type Pinger struct {
	r       *runner
	c, s    Conn
	dc      DatagramConn
	srv     <-chan error
	out, in []byte
	seq     uint64
	part    int // see runner.part
}

// StartPinger connects a pair over sys (open on h) and starts its server;
// everything ends after limit at the latest.
func StartPinger(ctx context.Context, sys System, h *Hosts, size int, limit time.Duration) (*Pinger, error) {
	spec := Spec{Workload: RR, Size: size, Conns: 1}
	ok, why, err := h.applies(sys, spec)
	if err != nil {
		return nil, err
	}
	if !ok || size < 8 {
		return nil, fmt.Errorf("bench: %s over %s: %s", spec, sys.Name(), why)
	}
	r := &runner{sys: sys, h: h, b: NewBound(ctx, limit), s: &Sample{Spec: spec}}
	c, s, err := sys.Pair(r.b)
	if err != nil {
		r.b.Stop()
		return nil, err
	}
	p := &Pinger{r: r, c: c, s: s, out: make([]byte, size), in: make([]byte, max(size, 64<<10))}
	if p.part, err = r.part(size); err != nil {
		r.b.Stop()
		closeAll(c, s)
		return nil, err
	}
	p.dc, _ = c.(DatagramConn)
	kind := sys.Kind()
	p.srv = r.server(func() error {
		if s == nil {
			return nil // the server end runs in another process
		}
		return echo(s, kind, size)
	})
	return p, nil
}

// Do runs one transaction and returns its round trip; a lost datagram is
// an error.
func (p *Pinger) Do() (time.Duration, error) {
	p.seq++
	start := time.Now()
	ok, err := transact(p.c, p.dc, p.r.sys.Kind(), p.out, p.in, p.seq, start, p.part)
	if err == nil && !ok {
		err = fmt.Errorf("rr: transaction %d lost", p.seq)
	}
	return time.Since(start), err
}

// Close stops the server and closes both ends.
func (p *Pinger) Close() error {
	p.c.CloseWrite() // a stream server sees EOF
	p.r.b.Stop()
	err := <-p.srv
	closeAll(p.c, p.s)
	if ended(err) {
		return nil
	}
	return err
}

// echo serves rr: every message goes back as it came.
func echo(c Conn, kind Kind, size int) error {
	if e, ok := c.(Echoer); ok {
		return e.Echo()
	}
	buf := make([]byte, max(size, 64<<10))
	for {
		n := size
		if kind == Stream {
			if err := recvFull(c, buf[:size]); err != nil {
				return err
			}
		} else {
			var err error
			if n, err = c.Recv(buf); err != nil {
				return err
			}
		}
		if err := c.Send(buf[:n]); err != nil {
			return err
		}
	}
}
