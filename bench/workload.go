package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	return AppliesOn(sys, spec, mtu, 1)
}

// MultiQueue is a System that needs several rx/tx queues at each end.
type MultiQueue interface {
	Queues() int // the fewest queues it runs on
}

// AppliesOn is Applies on a testbed with queues queues at each end.
func AppliesOn(sys System, spec Spec, mtu, queues int) (bool, string) {
	if m, ok := sys.(MultiQueue); ok && m.Queues() > queues {
		return false, fmt.Sprintf("needs %d queues at each end (sdxbench -queues %d)", m.Queues(), m.Queues())
	}
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
	ok, why, err := h.applies(sys, spec)
	if err != nil {
		return nil, err
	}
	if !ok {
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
