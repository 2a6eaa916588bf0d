package bench

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// The one-way workloads: msgrate (small messages, flood) and bulk
// (a stream of BulkChunk writes), on one connection or several.

// msgrate: the client sends messages one way as fast as it can; the server
// counts what arrives. A stream receiver reads whatever is there (as a
// buffered reader would); a datagram receiver takes one message per call.
// The rate is messages received over the time from the start to the last
// one.
func (r *runner) msgrate() error {
	size := r.s.Size
	sent, msgs, bytes, err := r.oneWay(size, r.bud.Messages)
	if err != nil {
		return err
	}
	r.s.Sent, r.s.Count = sent, msgs
	if r.sys.Kind() == Stream {
		r.s.Count = bytes / int64(size)
	}
	return nil
}

// flood is bulk over a Flooder, the floor: the client queues messages of
// the largest size the link carries one way (MaxMessage), and the kernel
// sends them a batch per kick, until the byte budget or the time limit;
// the server takes them one by one. Count is the payload received, the
// bytes a stream's bulk counts, over the time from the start to the last
// message; Sent is the payload sent, so what the link dropped shows as
// loss.
func (r *runner) flood() error {
	mtu, err := r.h.MTU()
	if err != nil {
		return err
	}
	size := r.sys.MaxMessage(mtu)
	if size <= 0 {
		return fmt.Errorf("bulk: %s has no largest message", r.sys.Name())
	}
	n := int(min((r.bud.Bytes+int64(size)-1)/int64(size), math.MaxInt32)) // frames to cover the byte budget
	sent, _, bytes, err := r.oneWay(size, n)
	if err != nil {
		return err
	}
	r.s.Sent, r.s.Count = sent*int64(size), bytes
	return nil
}

// oneWay has the client send up to n messages of size bytes one way, as
// fast as it can (queued a batch per kick when its end is a Batcher),
// until n or the time limit, and the server receive them. It returns the
// messages sent, and the Recv calls and bytes the server had; it sets the
// sample's Elapsed (from the start to the last arrival) and CPU.
func (r *runner) oneWay(size, n int) (sent, msgs, bytes int64, err error) {
	if rs, ok := r.sys.(RemoteSink); ok {
		return r.oneWayRemote(rs, size, n)
	}
	c, s, err := r.sys.Pair(r.b)
	if err != nil {
		return 0, 0, 0, err
	}
	defer closeAll(c, s)
	var (
		begin    = make(chan struct{})
		t0       time.Time
		gotMsgs  atomic.Int64 // Recv calls that returned data
		gotBytes atomic.Int64
		lastRecv time.Time
		nsent    atomic.Int64
		sending  = make(chan struct{}) // closed when the client is done
	)
	srv := r.server(func() error {
		<-begin
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Recv(buf)
			if err != nil {
				return err
			}
			lastRecv = time.Now()
			gotBytes.Add(int64(n))
			gotMsgs.Add(1)
		}
	})
	cli := r.client(false, func() (err error) {
		defer func() {
			if err != nil {
				r.b.Stop() // the server would wait for an EOF that is not coming
			}
			close(sending)
		}()
		<-begin
		k, err := r.sendOneWay(c, size, n, t0)
		nsent.Store(k)
		return err
	})
	cpu0, err := r.cpu()
	if err != nil {
		r.b.Stop()
		return 0, 0, 0, errors.Join(err, r.finish(cli, srv))
	}
	t0 = time.Now()
	close(begin)
	<-sending
	if r.sys.Kind() == Datagram {
		// Wait for the receiver to drain: until it has everything, or
		// nothing more arrived for a while.
		for prev := int64(-1); ; {
			n := gotMsgs.Load()
			if n >= nsent.Load() || n == prev || r.b.Done() {
				break
			}
			prev = n
			time.Sleep(20 * time.Millisecond)
		}
		r.b.Stop()
	}
	err = r.finish(srv, cli)
	cpu1, cerr := r.cpu()
	if err = errors.Join(err, cerr); err != nil {
		return 0, 0, 0, err
	}
	r.s.Elapsed, r.s.CPU = lastRecv.Sub(t0), time.Duration(cpu1-cpu0)
	if gotBytes.Load() == 0 || r.s.Elapsed <= 0 {
		return 0, 0, 0, fmt.Errorf("%s: nothing received", r.s.Workload)
	}
	return nsent.Load(), gotMsgs.Load(), gotBytes.Load(), nil
}

// sendOneWay is oneWay's client: it sends up to n messages of size bytes
// over c, as fast as it can (queued a batch per kick when c is a
// Batcher), until n or the time limit from t0, then ends the stream.
func (r *runner) sendOneWay(c Conn, size, n int, t0 time.Time) (sent int64, err error) {
	msg := make([]byte, size)
	bc, batched := c.(Batcher)
	i := 0
	for ; i < n; i++ {
		// The first message always goes: a client thread the scheduler
		// starts late still measures something.
		if i%64 == 0 && (r.b.Stopped() || (i > 0 && time.Since(t0) > r.bud.Limit)) {
			break
		}
		var err error
		if batched {
			err = bc.Queue(msg)
		} else {
			err = c.Send(msg)
		}
		if err != nil {
			return 0, err
		}
	}
	if batched {
		if err := bc.Flush(); err != nil {
			return 0, err
		}
	}
	return int64(i), c.CloseWrite() // a stream server reads to EOF
}

// drainWait is how long a remote sink may take to receive the rest once
// the client is done: what is left of the run's time, and at least
// a tenth of a second.
func (r *runner) drainWait() time.Duration {
	return max(time.Until(r.b.Deadline()), 100*time.Millisecond)
}

// oneWayRemote is oneWay to a sink in another process: the client sends
// from here, and the sink reports what it received.
func (r *runner) oneWayRemote(rs RemoteSink, size, n int) (sent, msgs, bytes int64, err error) {
	if err := rs.ResetSink(64 << 10); err != nil {
		return 0, 0, 0, err
	}
	drained := false
	defer func() {
		if !drained {
			rs.DrainSink(0, 0) // the floor's child goes back to echoing
		}
	}()
	c, err := rs.DialSink(r.b)
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	cpu0, err := r.cpu()
	if err != nil {
		return 0, 0, 0, err
	}
	t0 := time.Now()
	cli := r.client(false, func() (err error) {
		sent, err = r.sendOneWay(c, size, n, t0)
		return err
	})
	if err := <-cli; err != nil {
		return 0, 0, 0, err
	}
	want := int64(1) // a stream: the connection ended
	if r.sys.Kind() == Datagram {
		want = sent
	}
	rep, err := rs.DrainSink(want, r.drainWait())
	drained = true
	cpu1, cerr := r.cpu()
	if err = errors.Join(err, cerr); err != nil {
		return 0, 0, 0, err
	}
	r.s.Elapsed, r.s.CPU = rep.Last.Sub(t0), time.Duration(cpu1-cpu0)
	if rep.Bytes == 0 || r.s.Elapsed <= 0 {
		return 0, 0, 0, fmt.Errorf("%s: nothing received", r.s.Workload)
	}
	return sent, rep.Reads, rep.Bytes, nil
}

// bulk: each connection's client writes BulkChunk bytes at a time until
// its share of the budget or the time limit, then closes; its server reads
// to EOF. The rate is all bytes received over the time from the start to
// the last byte.
func (r *runner) bulk() error {
	k := r.s.Conns
	clients, servers := make([]Conn, k), make([]Conn, k)
	defer func() { closeAll(clients...); closeAll(servers...) }()
	rs, remote := r.sys.(RemoteSink)
	drained := false
	if remote {
		if err := rs.ResetSink(256 << 10); err != nil {
			return err
		}
		defer func() {
			if !drained {
				rs.DrainSink(0, 0) // the floor's child goes back to echoing
			}
		}()
	}
	for i := range k {
		var err error
		if remote {
			clients[i], err = rs.DialSink(r.b)
		} else {
			clients[i], servers[i], err = r.sys.Pair(r.b)
		}
		if err != nil {
			return err
		}
	}
	share := r.bud.Bytes / int64(k)
	begin := make(chan struct{})
	var t0 time.Time
	var mu sync.Mutex
	var total int64
	var last time.Time
	chans := make([]<-chan error, 0, 2*k)
	for i := range k {
		c, s := clients[i], servers[i]
		chans = append(chans, r.client(false, func() error {
			defer c.CloseWrite()
			<-begin
			buf := make([]byte, BulkChunk)
			for n := int64(0); n < share; n += BulkChunk {
				// The first chunk always goes, as in oneWay.
				if r.b.Stopped() || (n > 0 && time.Since(t0) > r.bud.Limit) {
					break
				}
				if err := c.Send(buf); err != nil {
					return err
				}
			}
			return nil
		}))
		if remote {
			continue // the sink in the other process reads
		}
		chans = append(chans, r.server(func() error {
			<-begin
			buf := make([]byte, 256<<10)
			var got int64
			var at time.Time
			defer func() {
				mu.Lock()
				total += got
				if at.After(last) {
					last = at
				}
				mu.Unlock()
			}()
			for {
				n, err := s.Recv(buf)
				if err != nil {
					return err
				}
				got += int64(n)
				at = time.Now()
			}
		}))
	}
	cpu0, err := r.cpu()
	if err != nil {
		r.b.Stop()
		close(begin)
		return errors.Join(err, r.finish(chans...))
	}
	t0 = time.Now()
	close(begin)
	var errs []error
	for _, c := range chans {
		if err := <-c; !ended(err) {
			errs = append(errs, err)
			r.b.Stop()
		}
	}
	if remote && len(errs) == 0 {
		rep, err := rs.DrainSink(int64(k), r.drainWait())
		drained = true
		if err != nil {
			errs = append(errs, err)
		}
		total, last = rep.Bytes, rep.Last
	}
	cpu1, err := r.cpu()
	if err = errors.Join(append(errs, err)...); err != nil {
		return err
	}
	r.s.Count, r.s.Elapsed, r.s.CPU = total, last.Sub(t0), time.Duration(cpu1-cpu0)
	if total == 0 || r.s.Elapsed <= 0 {
		return fmt.Errorf("bulk: nothing received")
	}
	return nil
}
