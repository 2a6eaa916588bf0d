package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Workload names what a run measures.
type Workload string

const (
	RR       Workload = "rr"       // ping-pong: one message out, the same size back, one at a time
	MsgRate  Workload = "msgrate"  // one-way messages, as fast as the receiver takes them
	Bulk     Workload = "bulk"     // one-way bytes over one or more connections
	ConnRate Workload = "connrate" // connect + accept + close, one at a time
	Idle     Workload = "idle"     // one connection open and quiet: what waiting costs
	HTTP     Workload = "http"     // net/http keep-alive GETs from Conns clients, Size-byte bodies
)

// BulkChunk is the size of each write in the bulk workload; its CPU per
// message is per chunk.
const BulkChunk = 64 << 10

// Spec is one workload at one size and connection count.
type Spec struct {
	Workload Workload
	Size     int // message bytes (rr, msgrate), body bytes (http)
	Conns    int // connections (bulk), client goroutines each with its connection (http)
}

func (s Spec) String() string {
	switch s.Workload {
	case Bulk:
		return fmt.Sprintf("bulk %d conn", s.Conns)
	case ConnRate:
		return "connrate"
	case Idle:
		return "idle"
	case HTTP:
		return fmt.Sprintf("http %s %d client", SizeString(s.Size), s.Conns)
	}
	return fmt.Sprintf("%s %s", s.Workload, SizeString(s.Size))
}

// SizeString writes a message size the way the table does: 64 B, 1 KiB.
func SizeString(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// AllWorkloads is every workload, in the table's order.
var AllWorkloads = []Workload{RR, MsgRate, Bulk, ConnRate, Idle, HTTP}

// Specs is every workload of the table, in its order, over a link of the
// given MTU: the second message rate is at the largest message one raw
// frame carries there (FrameMessage), the size of the floor's bulk frames.
func Specs(mtu int) []Spec {
	return []Spec{
		{Workload: RR, Size: 64, Conns: 1},
		{Workload: RR, Size: 1024, Conns: 1},
		{Workload: RR, Size: 16384, Conns: 1},
		{Workload: MsgRate, Size: 64, Conns: 1},
		{Workload: MsgRate, Size: FrameMessage(mtu), Conns: 1},
		{Workload: Bulk, Size: BulkChunk, Conns: 1},
		{Workload: Bulk, Size: BulkChunk, Conns: 4},
		{Workload: ConnRate, Conns: 1},
		{Workload: Idle, Conns: 1},
		{Workload: HTTP, Size: 64, Conns: 1},
		{Workload: HTTP, Size: 64, Conns: 32},
	}
}

// Applies reports whether spec can run over sys on a link of the given
// MTU, and if not, why.
func Applies(sys System, spec Spec, mtu int) (bool, string) {
	switch spec.Workload {
	case RR, MsgRate:
		_, split := sys.(Flooder)
		if m := sys.MaxMessage(mtu); m > 0 && spec.Size > m && (!split || spec.Workload != RR) {
			return false, fmt.Sprintf("a message is one frame, at most %d B at MTU %d", m, mtu)
		}
	case Bulk:
		if _, ok := sys.(Flooder); ok {
			if spec.Conns > 1 {
				return false, "one flow at a time: one AF_XDP queue at each end"
			}
		} else if sys.Kind() != Stream {
			return false, "datagrams, no stream to fill"
		}
	case ConnRate:
		_, remote := sys.(RemoteConnect)
		if _, ok := sys.(Listening); !ok && !remote {
			return false, "no connections"
		}
	case HTTP:
		_, remote := sys.(RemoteHTTP)
		if _, ok := sys.(NetListening); !ok && !remote {
			return false, "no net.Conn for net/http"
		}
	}
	return true, ""
}

// Budget bounds each run by count and by time. Limit bounds the measured
// part of a run; Setup bounds connecting before it and draining after it.
type Budget struct {
	Transactions int   // rr transactions measured
	Warmup       int   // rr transactions before measuring
	Messages     int   // msgrate messages sent
	Bytes        int64 // bulk bytes sent, over all connections
	Conns        int   // connections set up and closed
	Limit        time.Duration
	Setup        time.Duration
}

// QuickBudget keeps a whole run of every system under a minute.
var QuickBudget = Budget{
	Transactions: 20000, Warmup: 500, Messages: 300000, Bytes: 512 << 20, Conns: 2000,
	Limit: 200 * time.Millisecond, Setup: 3 * time.Second,
}

// FullBudget is the default: runs of up to two seconds.
var FullBudget = Budget{
	Transactions: 500000, Warmup: 5000, Messages: 5000000, Bytes: 8 << 30, Conns: 50000,
	Limit: 2 * time.Second, Setup: 5 * time.Second,
}

// Sample is what one run measured.
type Sample struct {
	Spec
	System  string
	Hist    *hdrhistogram.Histogram // rr: each measured round trip, in ns
	Count   int64                   // transactions, messages received, bytes received, connections
	Sent    int64                   // msgrate: messages sent; bulk over a Flooder: payload bytes sent
	Lost    int64                   // rr over datagrams: transactions whose answer never came
	Elapsed time.Duration           // the measured part of the run
	CPU     time.Duration           // process user+system time during it
	Counts  *Counts                 // RunCounting: the events counted during it
}

// Rate is the run's figure of merit, in Unit.
func (s *Sample) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	if s.Workload == Idle {
		return 100 * s.CPU.Seconds() / s.Elapsed.Seconds()
	}
	r := float64(s.Count) / s.Elapsed.Seconds()
	if s.Workload == Bulk {
		return r * 8 / 1e9
	}
	return r
}

// Unit is the unit of Rate.
func (s *Sample) Unit() string { return UnitOf(s.Workload) }

// UnitOf is the unit of a workload's rate.
func UnitOf(w Workload) string {
	switch w {
	case RR:
		return "tps"
	case MsgRate:
		return "msg/s"
	case Bulk:
		return "Gbit/s"
	case ConnRate:
		return "conn/s"
	case Idle:
		return "%cpu"
	case HTTP:
		return "req/s"
	}
	return ""
}

// Messages is the count CPU time is divided by: transactions, messages,
// bulk chunks or connections; none for idle.
func (s *Sample) Messages() int64 {
	switch s.Workload {
	case Bulk:
		return s.Count / BulkChunk
	case Idle:
		return 0
	}
	return s.Count
}

// CPUPerMsg is the process CPU time per message, in µs.
func (s *Sample) CPUPerMsg() float64 {
	m := s.Messages()
	if m == 0 {
		return 0
	}
	return float64(s.CPU.Nanoseconds()) / 1e3 / float64(m)
}

// Loss is the fraction of messages (msgrate) or payload bytes (the floor's
// bulk) sent that never arrived, or of transactions that got no answer
// (rr), for datagram systems.
func (s *Sample) Loss() float64 {
	switch {
	case (s.Workload == MsgRate || s.Workload == Bulk) && s.Sent > 0:
		return 1 - float64(s.Count)/float64(s.Sent)
	case s.Workload == RR && s.Lost > 0:
		return float64(s.Lost) / float64(s.Count+s.Lost)
	}
	return 0
}

// NewHist returns the histogram round trips are recorded in: 1 ns to 10 s
// at three significant digits.
func NewHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 10e9, 3) }

// Run runs spec once over sys, which must be open on h.
func Run(ctx context.Context, sys System, h *Hosts, spec Spec, bud Budget) (*Sample, error) {
	return run(ctx, sys, h, spec, bud, false)
}

func run(ctx context.Context, sys System, h *Hosts, spec Spec, bud Budget, count bool) (*Sample, error) {
	mtu, err := h.MTU()
	if err != nil {
		return nil, err
	}
	if ok, why := Applies(sys, spec, mtu); !ok {
		return nil, fmt.Errorf("bench: %s over %s: %s", spec, sys.Name(), why)
	}
	b := NewBound(ctx, bud.Setup+bud.Limit)
	defer b.Stop()
	r := &runner{sys: sys, h: h, b: b, bud: bud, s: &Sample{Spec: spec, System: sys.Name()}}
	if count {
		r.cnt = openCounter(sys)
	}
	switch spec.Workload {
	case RR:
		err = r.rr()
	case MsgRate:
		err = r.msgrate()
	case Bulk:
		if _, ok := sys.(Flooder); ok {
			err = r.flood()
		} else {
			err = r.bulk()
		}
	case ConnRate:
		err = r.connrate()
	case Idle:
		err = r.idle()
	case HTTP:
		err = r.httpRun()
	default:
		err = fmt.Errorf("bench: unknown workload %q", spec.Workload)
	}
	if r.cnt != nil {
		r.s.Counts = r.cnt.counts()
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil && (r.s.Count == 0 || r.s.Elapsed <= 0) {
		err = errors.New("the run was stopped before it measured anything")
	}
	if err != nil {
		return nil, fmt.Errorf("%s over %s: %w", spec, sys.Name(), err)
	}
	return r.s, nil
}

type runner struct {
	sys System
	h   *Hosts
	b   *Bound
	bud Budget
	s   *Sample
	cnt *counter // RunCounting's; nil when not counting
}

// client and server start fn on the client's or the server's thread:
// pinned when the system spins, inside A's namespace when it must create
// sockets there (inA).
func (r *runner) client(inA bool, fn func() error) <-chan error {
	ns, cpu := "", noCPU
	if inA {
		ns = r.h.A.NS
	}
	if r.sys.Pinned() {
		cpu = r.h.ClientCPU
	}
	return start(ns, cpu, fn)
}

func (r *runner) server(fn func() error) <-chan error {
	cpu := noCPU
	if r.sys.Pinned() {
		cpu = r.h.ServerCPU
	}
	return start("", cpu, fn)
}

// start runs fn on a plain goroutine when it needs neither a namespace nor
// a CPU, else on a locked (and maybe pinned) thread.
func start(ns string, cpu int, fn func() error) <-chan error {
	if ns != "" || cpu != noCPU {
		return goThread(ns, cpu, fn)
	}
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				errc <- fmt.Errorf("bench: panic: %v", p)
			}
		}()
		errc <- fn()
	}()
	return errc
}

// cpu returns the CPU time the run's processes have used so far, in ns:
// this process's, and a two-process system's child's. Every workload
// calls it at the start of its measured part and at its end, so when
// counting it marks the counters there too.
func (r *runner) cpu() (int64, error) {
	if r.cnt != nil {
		r.cnt.mark()
	}
	t, err := cpuTime()
	if x, ok := r.sys.(interface{ ExtraCPU() (int64, error) }); ok && err == nil {
		var c int64
		c, err = x.ExtraCPU()
		t += c
	}
	return t, err
}

// ended reports whether err only says the run is over.
func ended(err error) bool {
	return err == nil || err == io.EOF || errors.Is(err, ErrStopped)
}

// finish stops the run, waits for every goroutine and returns the first
// real error.
func (r *runner) finish(chans ...<-chan error) error {
	var errs []error
	for i, c := range chans {
		err := <-c
		if i == 0 || !ended(err) {
			// The first is the driving side: any error of its own ends the
			// run early, and it stops the others.
			r.b.Stop()
		}
		if !ended(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func closeAll(cs ...Conn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

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
		if r.b.Stopped() || (i > warmup && last.Sub(t0) > r.bud.Limit) {
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
		return fmt.Errorf("rr: no transaction completed within %v", r.bud.Limit)
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
	binary.LittleEndian.PutUint64(out, seq)
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

// transactParts is transact for a message sent as frames of part bytes.
func transactParts(b Batcher, dc DatagramConn, out, in []byte, seq uint64, start time.Time, part int) (bool, error) {
	for off := 0; off < len(out); off += part {
		p := out[off:min(off+part, len(out))]
		binary.LittleEndian.PutUint64(p, seq)
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
	mtu, err := h.MTU()
	if err != nil {
		return nil, err
	}
	if ok, why := Applies(sys, spec, mtu); !ok || size < 8 {
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

// connrate: the client (inside A) connects; the server accepts and closes
// its sending side; the client sees the end of the stream and closes; the
// server sees that and closes. One connection at a time.
func (r *runner) connrate() error {
	if rc, ok := r.sys.(RemoteConnect); ok {
		return r.connrateRemote(rc)
	}
	ls, _ := r.sys.(Listening)
	ln, err := ls.Listen(r.b)
	if err != nil {
		return err
	}
	defer ln.Close()
	begin := make(chan struct{})
	srv := r.server(func() error {
		<-begin
		var buf [1]byte
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			// Close first, then wait for the client's close: the
			// server's side ends up in TIME_WAIT, which keeps the
			// client's ephemeral ports free.
			if err := c.CloseWrite(); err != nil {
				c.Close()
				return err
			}
			_, err = c.Recv(buf[:])
			c.Close()
			if errors.Is(err, ErrStopped) {
				return err // the run ended while the last close was on its way
			}
			if !closedByPeer(err) {
				return fmt.Errorf("connrate: server expected the client's close, got %v", err)
			}
		}
	})
	cli := r.client(true, func() error {
		<-begin
		return r.connrateClient(ln.Dial)
	})
	close(begin)
	err = <-cli
	r.b.Stop() // ends the server's Accept
	if serr := <-srv; !ended(serr) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return err
	}
	if r.s.Count == 0 {
		return fmt.Errorf("connrate: no connection within %v", r.bud.Limit)
	}
	return nil
}

// connrateClient connects with dial, waits for the server's close and
// closes, for as many connections as the budget allows, and records the
// count, the elapsed time and the CPU time.
func (r *runner) connrateClient(dial func() (Conn, error)) error {
	var one [1]byte
	cpu0, err := r.cpu()
	if err != nil {
		return err
	}
	t0 := time.Now()
	for i := 0; i < r.bud.Conns; i++ {
		if r.b.Stopped() || time.Since(t0) > r.bud.Limit {
			break
		}
		c, err := dial()
		if err != nil {
			return err
		}
		_, err = c.Recv(one[:])
		c.Close()
		if !closedByPeer(err) {
			return fmt.Errorf("connrate: client expected the server's close, got %v", err)
		}
		r.s.Count++
	}
	t1 := time.Now()
	cpu1, err := r.cpu()
	r.s.Elapsed, r.s.CPU = t1.Sub(t0), time.Duration(cpu1-cpu0)
	return err
}

// connrateRemote is connrate against a closer in another process, which
// accepts and closes as connrate's server does.
func (r *runner) connrateRemote(rc RemoteConnect) error {
	cli := r.client(false, func() error {
		return r.connrateClient(func() (Conn, error) { return rc.DialCloser(r.b) })
	})
	if err := <-cli; err != nil {
		return err
	}
	if r.s.Count == 0 {
		return fmt.Errorf("connrate: no connection within %v", r.bud.Limit)
	}
	return nil
}

// closedByPeer reports whether a Recv error says the peer closed: the end
// of the stream, or a reset (sdx's CloseSocket is a hard close).
func closedByPeer(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

// idle: one connection open, the server waiting in Recv the way the
// system waits (spinning, parked in the kernel, or polling adaptively),
// nothing sent for the time limit. The figure is the process's CPU time
// over that time, in % of one CPU.
func (r *runner) idle() error {
	c, s, err := r.sys.Pair(r.b)
	if err != nil {
		return err
	}
	defer closeAll(c, s)
	begin := make(chan struct{})
	srv := r.server(func() error {
		<-begin
		if s == nil {
			// The server end is another process's: it waits there; here
			// the client waits for its answer to nothing.
			s = c
		}
		buf := make([]byte, 64)
		for {
			if _, err := s.Recv(buf); err != nil {
				return err
			}
		}
	})
	cpu0, err := r.cpu()
	t0 := time.Now()
	close(begin)
	if err == nil {
		select {
		case <-time.After(r.bud.Limit):
		case err = <-srv:
			// The server ended before the time was up.
			srv = nil
			if ended(err) {
				err = errors.New("idle: the server stopped waiting")
			}
		}
	}
	cpu1, cerr := r.cpu()
	r.s.Elapsed, r.s.CPU, r.s.Count = time.Since(t0), time.Duration(cpu1-cpu0), 1
	c.CloseWrite()
	r.b.Stop()
	if srv != nil {
		if serr := <-srv; !ended(serr) {
			err = errors.Join(err, serr)
		}
	}
	return errors.Join(err, cerr)
}
