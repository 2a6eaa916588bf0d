package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// Incast is a shared-link run: Senders hosts stream at once to one
// receiver through a switch port that is a shallow-buffered bottleneck
// (testbed.Shared), each over sdx or over kernel TCP with cubic, while a
// 64 B ping-pong from the first sender's host crosses the same port.
type Incast struct {
	// Kinds names each sender's system: IncastSDX or IncastCubic.
	Kinds    []string
	Rate     int64 // the bottleneck, bits per second
	Buffer   int   // its queue, bytes
	ECN      bool  // bpf's marker marks ECN-capable frames in front of the tbf; kernel TCP gets ECN too
	Warmup   time.Duration
	Duration time.Duration
	Subnet   uint8
	Pacing   bool          // sdx paces its windows (provider.Config.Pacing)
	MinRTO   time.Duration // sdx's retransmission timeout floor; 0: the provider's default
	Reno     bool          // sdx runs NewReno, not CUBIC (provider.Config.Congestion)

	// MarkThreshold is the marker's threshold in bytes, with ECN; 0:
	// testbed.DefaultMarkThreshold(Buffer).
	MarkThreshold int
}

// The systems of an incast run.
const (
	IncastSDX   = "sdx"
	IncastCubic = "cubic" // kernel TCP, TCP_CONGESTION cubic on each socket
)

// IncastFlow is what one sender's stream did in the measured part.
type IncastFlow struct {
	Kind     string
	Bytes    int64
	Mbps     float64
	MaxStall time.Duration // the longest time the receiver waited for bytes
}

// IncastResult is one incast run.
type IncastResult struct {
	Flows []IncastFlow
	// Goodput is what arrived, all flows together, as a fraction of the
	// bottleneck's rate; Jain is Jain's index over the flows' rates.
	Goodput, Jain float64
	// Share is each system's part of what arrived.
	Share map[string]float64
	// At the bottleneck: frames sent, dropped and marked in the measured
	// part, and the part of the offered frames dropped.
	Sent, Dropped, Marked uint64
	DropFrac              float64
	// Retransmitted and sent data segments, by system (sdx: Stats;
	// TCP: TCP_INFO).
	Retrans, DataOut map[string]uint64
	// CPU is the process's CPU time over the measured part, as a
	// fraction of all CPUs; CPUPerGB is CPU seconds per GB delivered.
	CPU, CPUPerGB float64
	// The 64 B ping-pong through the bottleneck.
	PingP50, PingP99 time.Duration
	PingN            int64
	CC               string // what the kernel TCP sockets ran, from TCP_CONGESTION
	// TCPECN counts the kernel TCP streams that agreed on ECN.
	TCPECN int
	// Bursts is the sdx senders' histogram of new segments sent back to
	// back (provider.Stats.Bursts: 1, 2-3, 4-7, ..., 64+) in the
	// measured part; RTOs and SpuriousRTOs their timer expiries.
	Bursts             []uint64
	RTOs, SpuriousRTOs uint64
}

type incastFlow struct {
	kind   string
	send   func([]byte) (int, error)
	recv   func([]byte) (int, error)
	close  func()
	bytes  atomic.Int64
	last   atomic.Int64 // unix nanos of the latest read
	stall  atomic.Int64
	raw    syscall.RawConn // TCP: the sender's socket
	prov   *provider.Provider
	sock   provider.Socket
	rprov  *provider.Provider
	rsock  provider.Socket
	cc, sc *net.TCPConn // TCP: the sender's and the receiver's ends
	record *atomic.Bool
}

// RunIncast builds the shared testbed, runs c and removes everything.
func RunIncast(ctx context.Context, c Incast) (_ *IncastResult, err error) {
	n := len(c.Kinds)
	if n < 1 || c.Rate <= 0 || c.Buffer <= 0 || c.Duration <= 0 {
		return nil, fmt.Errorf("incast: %d senders, rate %d, buffer %d, duration %v", n, c.Rate, c.Buffer, c.Duration)
	}
	sh, err := testbed.CreateShared(testbed.SharedOptions{Senders: n, Subnet: c.Subnet})
	if err != nil {
		return nil, err
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		err = errors.Join(err, sh.Close())
	}()
	b := testbed.Bottleneck{Rate: c.Rate, Buffer: c.Buffer, ECN: c.ECN, Threshold: c.MarkThreshold}
	if c.ECN {
		m, err := bpf.LoadMarker()
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, func() { m.Close() })
		b.Marker = m
	}
	if err := sh.SetBottleneck(b); err != nil {
		return nil, err
	}
	startSDX := func(h *testbed.Host) (*provider.Provider, error) {
		l, err := xdplink.New(xdplink.Config{Netns: h.NS, Interface: h.If})
		if err != nil {
			return nil, err
		}
		cfg := provider.Config{Link: l, Pacing: c.Pacing, MinRTO: c.MinRTO}
		if c.Reno {
			cfg.Congestion = provider.CongestionNewReno
		}
		p, err := provider.Startup(cfg)
		if err != nil {
			l.Close()
			return nil, err
		}
		cleanups = append(cleanups, func() { p.Cleanup() })
		return p, nil
	}
	var rp *provider.Provider
	var rln provider.Socket
	var tln *net.TCPListener
	raddr := netip.AddrPortFrom(sh.Recv.Addr, 5000)
	for _, k := range c.Kinds {
		switch {
		case k == IncastSDX && rp == nil:
			if rp, err = startSDX(&sh.Recv); err != nil {
				return nil, err
			}
			if rln, err = rp.Socket(); err != nil {
				return nil, err
			}
			if err := rp.Bind(rln, raddr); err != nil {
				return nil, err
			}
			if err := rp.Listen(rln, 64); err != nil {
				return nil, err
			}
		case k == IncastCubic && tln == nil:
			if err := sh.Recv.Do(func() (err error) {
				tln, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(raddr))
				return err
			}); err != nil {
				return nil, err
			}
			cleanups = append(cleanups, func() { tln.Close() })
		case k != IncastSDX && k != IncastCubic:
			return nil, fmt.Errorf("incast: unknown system %q (have %s, %s)", k, IncastSDX, IncastCubic)
		}
	}
	record := new(atomic.Bool)
	provs := map[int]*provider.Provider{}
	var ccName string
	connect := func(i int, kind string) (*incastFlow, error) {
		f := &incastFlow{kind: kind, record: record}
		h := &sh.Senders[i]
		if kind == IncastSDX {
			p := provs[i]
			if p == nil {
				var err error
				if p, err = startSDX(h); err != nil {
					return nil, err
				}
				provs[i] = p
			}
			s, err := p.Socket()
			if err != nil {
				return nil, err
			}
			if err := p.Connect(s, raddr); err != nil {
				return nil, fmt.Errorf("incast: connect from %v: %w", h.Addr, err)
			}
			r, _, err := rp.Accept(rln)
			if err != nil {
				return nil, err
			}
			f.prov, f.sock, f.rprov, f.rsock = p, s, rp, r
			f.send = func(b []byte) (int, error) { return p.Send(s, b) }
			f.recv = func(b []byte) (int, error) { return rp.Recv(r, b) }
			f.close = func() { p.CloseSocket(s); rp.CloseSocket(r) }
			return f, nil
		}
		var cc *net.TCPConn
		if err := h.Do(func() error {
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error { return sys.SetCongestion(rc, "cubic") }}
			conn, err := d.Dial("tcp4", raddr.String())
			if err != nil {
				return err
			}
			cc = conn.(*net.TCPConn)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("incast: TCP from %v: %w", h.Addr, err)
		}
		sc, err := tln.AcceptTCP()
		if err != nil {
			cc.Close()
			return nil, err
		}
		f.raw, _ = cc.SyscallConn()
		if _, _, name, err := sys.TCPCounters(f.raw); err == nil {
			ccName = name
		}
		f.cc, f.sc = cc, sc
		f.send, f.recv = cc.Write, sc.Read
		f.close = func() { cc.Close(); sc.Close() }
		return f, nil
	}
	var flows []*incastFlow
	for i, k := range c.Kinds {
		f, err := connect(i, k)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, f.close)
		flows = append(flows, f)
	}
	ping, err := connect(0, c.Kinds[0])
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, ping.close)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range flows {
		wg.Add(2)
		go func() { // the sender: 64 KiB writes until stopped
			defer wg.Done()
			buf := make([]byte, BulkChunk)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := f.send(buf); err != nil {
					return
				}
			}
		}()
		go func() { // the receiver: counts what arrives, and the gaps
			defer wg.Done()
			buf := make([]byte, BulkChunk)
			for {
				k, err := f.recv(buf)
				if err != nil || k == 0 {
					return
				}
				now := time.Now().UnixNano()
				if f.record.Load() {
					f.bytes.Add(int64(k))
					if last := f.last.Load(); last != 0 && now-last > f.stall.Load() {
						f.stall.Store(now - last)
					}
				}
				f.last.Store(now)
			}
		}()
	}
	hist := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	wg.Add(2)
	go func() { // the ping-pong's echo on the receiver
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(readerFunc(ping.recv), buf); err != nil {
				return
			}
			if _, err := ping.echo(buf); err != nil {
				return
			}
		}
	}()
	go func() { // the ping-pong's client
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if _, err := ping.send(buf); err != nil {
				return
			}
			if _, err := io.ReadFull(readerFunc(ping.back), buf); err != nil {
				return
			}
			if record.Load() {
				hist.RecordValue(max(time.Since(t0).Microseconds(), 1))
			}
			time.Sleep(time.Millisecond) // a request a millisecond, not a flood
		}
	}()
	defer func() {
		close(stop)
		for _, f := range append(flows, ping) {
			f.close()
		}
		wg.Wait()
	}()

	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := sleep(c.Warmup); err != nil {
		return nil, err
	}
	type snap struct {
		q       testbed.QdiscStats
		cpu     time.Duration
		retrans map[string]uint64
		data    map[string]uint64
		bursts  []uint64
		rto     [2]uint64
	}
	take := func() (s snap, err error) {
		s.retrans, s.data = map[string]uint64{}, map[string]uint64{}
		if s.q, err = sh.BottleneckStats(); err != nil {
			return s, err
		}
		if s.cpu, err = sys.ProcessCPU(); err != nil {
			return s, err
		}
		s.bursts = make([]uint64, len(provider.Stats{}.Bursts))
		for _, p := range provs {
			st := p.Stats()
			s.retrans[IncastSDX] += st.Retransmits
			s.data[IncastSDX] += st.DataOut
			for i, b := range st.Bursts {
				s.bursts[i] += b
			}
			s.rto[0] += st.RTOExpiries
			s.rto[1] += st.SpuriousRTOs
		}
		for _, f := range flows {
			if f.raw != nil {
				r, d, _, err := sys.TCPCounters(f.raw)
				if err != nil {
					return s, err
				}
				s.retrans[IncastCubic] += r
				s.data[IncastCubic] += d
			}
		}
		return s, nil
	}
	s0, err := take()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	record.Store(true)
	if err := sleep(c.Duration); err != nil {
		return nil, err
	}
	record.Store(false)
	elapsed := time.Since(start)
	s1, err := take()
	if err != nil {
		return nil, err
	}
	res := &IncastResult{Share: map[string]float64{}, Retrans: map[string]uint64{}, DataOut: map[string]uint64{}, CC: ccName}
	var total float64
	var rates []float64
	for _, f := range flows {
		b := f.bytes.Load()
		mbps := float64(b) * 8 / elapsed.Seconds() / 1e6
		res.Flows = append(res.Flows, IncastFlow{Kind: f.kind, Bytes: b, Mbps: mbps, MaxStall: time.Duration(f.stall.Load())})
		rates = append(rates, mbps)
		total += float64(b)
		res.Share[f.kind] += float64(b)
	}
	for k := range res.Share {
		res.Share[k] /= max(total, 1)
	}
	res.Goodput = total * 8 / elapsed.Seconds() / float64(c.Rate)
	res.Jain = jainIndex(rates)
	res.Sent, res.Dropped, res.Marked = s1.q.Sent-s0.q.Sent, s1.q.Dropped-s0.q.Dropped, s1.q.Marked-s0.q.Marked
	res.DropFrac = float64(res.Dropped) / math.Max(float64(res.Sent+res.Dropped), 1)
	for k := range s1.retrans {
		res.Retrans[k] = s1.retrans[k] - s0.retrans[k]
		res.DataOut[k] = s1.data[k] - s0.data[k]
	}
	for i := range s1.bursts {
		res.Bursts = append(res.Bursts, s1.bursts[i]-s0.bursts[i])
	}
	res.RTOs, res.SpuriousRTOs = s1.rto[0]-s0.rto[0], s1.rto[1]-s0.rto[1]
	for _, f := range flows {
		if f.cc != nil {
			if ti, err := sys.TCPInfo(f.cc); err == nil && ti.ECN {
				res.TCPECN++
			}
		}
	}
	cpu := (s1.cpu - s0.cpu).Seconds()
	res.CPU = cpu / elapsed.Seconds() / float64(runtime.NumCPU())
	res.CPUPerGB = cpu / math.Max(total/1e9, 1e-9)
	res.PingN = hist.TotalCount()
	res.PingP50 = time.Duration(hist.ValueAtQuantile(50)) * time.Microsecond
	res.PingP99 = time.Duration(hist.ValueAtQuantile(99)) * time.Microsecond
	return res, nil
}

// echo and back are the ping-pong's other half: the receiver writes the
// answer, and the client reads it.
func (f *incastFlow) echo(b []byte) (int, error) {
	if f.rprov != nil {
		return f.rprov.Send(f.rsock, b)
	}
	return f.sc.Write(b)
}

func (f *incastFlow) back(b []byte) (int, error) {
	if f.prov != nil {
		return f.prov.Recv(f.sock, b)
	}
	return f.cc.Read(b)
}

type readerFunc func([]byte) (int, error)

func (r readerFunc) Read(b []byte) (int, error) { return r(b) }

// jainIndex is Jain's fairness index of xs.
func jainIndex(xs []float64) float64 {
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	if s2 == 0 {
		return 0
	}
	return s * s / (float64(len(xs)) * s2)
}
