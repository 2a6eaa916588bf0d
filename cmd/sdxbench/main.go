// Command sdxbench measures sdx side by side with what a user would pick
// instead over the same link: Go net TCP, kernel TCP and UDP driven by a
// spinning reader, and the raw AF_XDP floor with no protocol at all.
//
//	sdxbench [-quick] [-count] [-repeat N] [-json FILE] [-plot FILE.png]
//	         [-systems LIST] [-workloads LIST] [-limit D]
//	         [-cpu-client N] [-cpu-server N] [-mtu N] [-queues N] [-no-control]
//	         [-ns-a NS -ns-b NS -if-a IF -if-b IF -addr-a IP -addr-b IP]
//
// It builds its own testbed (two network namespaces joined by a veth pair,
// addresses in 198.18.0.0/15) and removes it when done, also on failure,
// SIGINT or SIGTERM; or it runs between namespaces and interfaces given by
// the -ns/-if/-addr flags, and then refuses any address outside
// 198.18.0.0/15. The client side runs in namespace A, the server side in B,
// in this process; spinning threads are pinned, the client's to
// -cpu-client and the server's to -cpu-server, the process is not.
//
// Workloads: ping-pong (rr) at 64 B, 1 KiB and 16 KiB with p50, p99,
// p99.9 and max from an HDR histogram; one-way message rate at 64 B and
// at the largest message one raw frame carries on the link; bulk
// throughput over 1 and 4 connections, and the raw AF_XDP floor's (frames
// of that largest size, 32 per kick); connection setup rate; CPU time per
// message. -no-control opens the sdx-conn systems' stacks without their
// control socket (sdx.Config.NoControl), to measure what serving it costs.
// Each is repeated; the table gives the median, the spread
// (min–max) and the ratio to kernel TCP with a spinning reader (tcp-spin).
// -json writes the same for scripts; -plot draws the 64 B latency CDFs;
// -count adds what each message cost the kernel: system calls, context
// switches, wake-ups, CPU migrations and CPU time, counted with
// perf_event_open(2) over every thread of the run's processes.
//
// It needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN) and Linux 5.9 or
// later (AF_XDP with need_wakeup, XDP through bpf_link), and at least two
// CPUs. It sends nothing outside the namespaces it runs between.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/bench"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
)

// options are the command line.
type options struct {
	quick      bool
	count      bool
	noControl  bool
	repeat     int
	jsonFile   string
	plotFile   string
	systems    []string
	workloads  []string
	limit      time.Duration
	cpuClient  int
	cpuServer  int
	mtu        int
	queues     int
	nsA, nsB   string
	ifA, ifB   string
	addrA      string
	addrB      string
	progress   io.Writer // nil: no progress line
	budget     *bench.Budget
	commandArg string
	incast     *incastOptions // -workload incast; nil otherwise
	cpuProfile string
}

// cpuProfileEnv names the file a two-process child writes its CPU
// profile to (with its pid appended), so that -cpuprofile covers the
// server's process too.
const cpuProfileEnv = "SDXBENCH_CPUPROFILE"

// startCPUProfile profiles this process into file until the returned
// function is called.
func startCPUProfile(file string) (func(), error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func main() {
	if bench.IsChild() {
		// The server end of a two-process system.
		stop := func() {}
		if file := os.Getenv(cpuProfileEnv); file != "" {
			if s, err := startCPUProfile(fmt.Sprintf("%s.%d", file, os.Getpid())); err == nil {
				stop = s
			}
		}
		code := bench.ServeChild()
		stop()
		os.Exit(code)
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "sdxbench:", err)
		os.Exit(2)
	}
	o.progress = os.Stderr
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sdxbench:", err)
			os.Exit(1)
		}
		defer stop()
		os.Setenv(cpuProfileEnv, o.cpuProfile+".child") // two-process children inherit it
	}
	if o.noControl {
		os.Setenv(bench.NoControlEnv, "1") // two-process children inherit it
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		// A second signal kills at once; the first one tears down.
		stop()
	}()
	start := time.Now()
	if o.incast != nil {
		if err := runIncast(ctx, os.Stdout, o); err != nil {
			fmt.Fprintln(os.Stderr, "sdxbench:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "sdxbench: done in %v\n", time.Since(start).Round(100*time.Millisecond))
		return
	}
	rep, err := run(ctx, o)
	if rep != nil {
		if werr := writeOutputs(os.Stdout, rep, o); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdxbench:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "sdxbench: done in %v\n", time.Since(start).Round(100*time.Millisecond))
}

func parseFlags(args []string) (*options, error) {
	o := &options{commandArg: strings.Join(append([]string{"sdxbench"}, args...), " ")}
	fs := flag.NewFlagSet("sdxbench", flag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", false, "short runs and 3 repeats: the whole table in under a minute")
	fs.BoolVar(&o.count, "count", false, "count system calls, futex calls, context switches, wake-ups, CPU migrations and CPU time per message (perf_event_open on every thread of the run's processes)")
	fs.IntVar(&o.repeat, "repeat", 0, "repeats of each run; the table shows the median and the spread (default 5, 3 with -quick)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to `FILE`, and one of each two-process server to FILE.child.PID (go tool pprof)")
	fs.StringVar(&o.jsonFile, "json", "", "write the results as JSON to `FILE`")
	fs.StringVar(&o.plotFile, "plot", "", "draw the 64 B ping-pong latency CDFs into `FILE.png`")
	systems := fs.String("systems", "", "comma-separated systems to run (default all): "+strings.Join(systemNames(), ","))
	workloads := fs.String("workloads", "", "comma-separated workloads to run (default all): "+workloadNames())
	fs.DurationVar(&o.limit, "limit", 0, "time limit of each run's measured part (default 2s, 200ms with -quick)")
	fs.IntVar(&o.cpuClient, "cpu-client", 0, "CPU the client's spinning threads are pinned to")
	fs.IntVar(&o.cpuServer, "cpu-server", 1, "CPU the server's spinning threads are pinned to")
	fs.IntVar(&o.mtu, "mtu", 1500, "MTU of the built-in testbed's veth pair")
	fs.BoolVar(&o.noControl, "no-control", false, "open the sdx-conn systems' stacks without their control socket (sdx.Config.NoControl)")
	fs.IntVar(&o.queues, "queues", 1, "rx/tx queues of each end of the built-in testbed's veth pair; sdx stacks serve every queue")
	fs.StringVar(&o.nsA, "ns-a", "", "run in this existing network namespace (client side) instead of building a testbed")
	fs.StringVar(&o.nsB, "ns-b", "", "existing network namespace of the server side")
	fs.StringVar(&o.ifA, "if-a", "", "interface inside -ns-a")
	fs.StringVar(&o.ifB, "if-b", "", "interface inside -ns-b")
	fs.StringVar(&o.addrA, "addr-a", "", "IPv4 address of -if-a, in 198.18.0.0/15")
	fs.StringVar(&o.addrB, "addr-b", "", "IPv4 address of -if-b, in 198.18.0.0/15")
	workload := fs.String("workload", "", "incast: N senders stream to one receiver through a shallow-buffered port (its own testbed; see -senders, -rate, -buffer, -ecn, -mix)")
	inc := &incastOptions{}
	fs.IntVar(&inc.senders, "senders", 4, "incast: sender hosts")
	rate := fs.String("rate", "500M", "incast: the bottleneck's rate in bit/s (suffix K, M or G)")
	fs.IntVar(&inc.buffer, "buffer", 100_000, "incast: the bottleneck's buffer in bytes")
	fs.BoolVar(&inc.ecn, "ecn", false, "incast: an eBPF marker (bpf.Marker) marks ECN-capable frames in front of the bottleneck, and kernel TCP uses ECN")
	fs.IntVar(&inc.markK, "mark-threshold", 0, "incast, with -ecn: the marking threshold in bytes (default 15% of -buffer)")
	fs.DurationVar(&inc.minRTO, "min-rto", 0, "incast: sdx's retransmission timeout floor (default the provider's, 5ms)")
	fs.BoolVar(&inc.pacing, "pacing", false, "incast: sdx paces its windows (provider.Config.Pacing), to compare the burst sizes")
	cc := fs.String("congestion", "cubic", "incast: sdx's congestion control, cubic or newreno (provider.Config.Congestion)")
	mix := fs.String("mix", "", "incast: runs to make, of sdx, cubic, mixed (half and half; default all three)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch *cc {
	case "cubic":
	case "newreno":
		inc.reno = true
	default:
		return nil, fmt.Errorf("-congestion %q: use cubic or newreno", *cc)
	}
	switch *workload {
	case "":
	case "incast":
		var err error
		if inc.rate, err = parseRate(*rate); err != nil {
			return nil, err
		}
		if inc.mixes, err = parseMixes(*mix); err != nil {
			return nil, err
		}
		if inc.senders < 1 || inc.senders > 64 || inc.buffer < 3000 {
			return nil, fmt.Errorf("-senders %d / -buffer %d: want 1..64 senders and a buffer of at least 3000 B", inc.senders, inc.buffer)
		}
		o.incast = inc
	default:
		return nil, fmt.Errorf("-workload %q: the only one is incast (the others go in -workloads)", *workload)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.repeat == 0 {
		o.repeat = 5
		if o.quick {
			o.repeat = 3
		}
	}
	if o.repeat < 1 || o.repeat > 100 {
		return nil, fmt.Errorf("-repeat %d: want 1..100", o.repeat)
	}
	if o.limit < 0 || o.limit > time.Minute {
		return nil, fmt.Errorf("-limit %v: want up to a minute", o.limit)
	}
	if o.queues < 1 || o.queues > 64 {
		return nil, fmt.Errorf("-queues %d: use 1..64", o.queues)
	}
	for _, s := range splitList(*systems) {
		if _, ok := bench.Lookup(s); !ok {
			return nil, fmt.Errorf("-systems: unknown system %q (have %s)", s, strings.Join(systemNames(), ", "))
		}
		o.systems = append(o.systems, s)
	}
	for _, w := range splitList(*workloads) {
		if !slices.Contains(bench.AllWorkloads, bench.Workload(w)) {
			return nil, fmt.Errorf("-workloads: unknown workload %q (have %s)", w, workloadNames())
		}
		o.workloads = append(o.workloads, w)
	}
	given := []string{o.nsA, o.nsB, o.ifA, o.ifB, o.addrA, o.addrB}
	if n := len(given) - countEmpty(given); n != 0 && n != len(given) {
		return nil, errors.New("-ns-a, -ns-b, -if-a, -if-b, -addr-a and -addr-b go together: give all or none")
	}
	if o.cpuClient < 0 || o.cpuServer < 0 || o.cpuClient == o.cpuServer {
		return nil, fmt.Errorf("-cpu-client %d and -cpu-server %d: want two different CPUs", o.cpuClient, o.cpuServer)
	}
	if max(o.cpuClient, o.cpuServer) >= runtime.NumCPU() {
		return nil, fmt.Errorf("-cpu-client %d / -cpu-server %d: this machine has %d CPUs", o.cpuClient, o.cpuServer, runtime.NumCPU())
	}
	return o, nil
}

func systemNames() []string {
	var names []string
	for _, s := range bench.Systems() {
		names = append(names, s.Name())
	}
	return names
}

func workloadNames() string {
	var names []string
	for _, w := range bench.AllWorkloads {
		names = append(names, string(w))
	}
	return strings.Join(names, ",")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func countEmpty(ss []string) int {
	n := 0
	for _, s := range ss {
		if s == "" {
			n++
		}
	}
	return n
}

// budget is what each run may spend.
func (o *options) budgetFor() bench.Budget {
	if o.budget != nil {
		return *o.budget
	}
	b := bench.FullBudget
	if o.quick {
		b = bench.QuickBudget
	}
	if o.limit > 0 {
		b.Limit = o.limit
	}
	return b
}

// hosts builds the testbed, or checks the hosts given by flags. done
// removes what was built.
func hosts(o *options) (h *bench.Hosts, built string, done func() error, err error) {
	h = &bench.Hosts{ClientCPU: o.cpuClient, ServerCPU: o.cpuServer}
	if o.nsA == "" {
		bed, err := testbed.Create(testbed.Options{MTU: o.mtu, Queues: o.queues})
		if err != nil {
			return nil, "", nil, fmt.Errorf("testbed: %w", err)
		}
		if err := bed.Neighbours(); err != nil {
			return nil, "", nil, errors.Join(err, bed.Close())
		}
		h.A, h.B = bed.A, bed.B
		return h, "built", bed.Close, nil
	}
	given := []struct {
		host       *testbed.Host
		ns, ifname string
		addr       netip.Addr
	}{{&h.A, o.nsA, o.ifA, netip.Addr{}}, {&h.B, o.nsB, o.ifB, netip.Addr{}}}
	for i, s := range []string{o.addrA, o.addrB} {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, "", nil, fmt.Errorf("address %q: %w", s, err)
		}
		if !a.Is4() || !bench.Range.Contains(a) {
			return nil, "", nil, fmt.Errorf("address %v is outside %v: sdxbench sends only inside the benchmark range", a, bench.Range)
		}
		given[i].addr = a
	}
	for _, x := range given {
		a := x.addr
		if !sys.NetnsExists(x.ns) {
			return nil, "", nil, fmt.Errorf("network namespace %q does not exist", x.ns)
		}
		*x.host = testbed.Host{NS: x.ns, If: x.ifname, Addr: a}
		if err := x.host.Do(func() error {
			ifi, err := net.InterfaceByName(x.ifname)
			if err != nil {
				return err
			}
			addrs, err := ifi.Addrs()
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(addrs, func(n net.Addr) bool {
				p, ok := n.(*net.IPNet)
				return ok && p.IP.Equal(a.AsSlice())
			}) {
				return fmt.Errorf("%v is not an address of %s", a, x.ifname)
			}
			x.host.Index, x.host.MAC = ifi.Index, ifi.HardwareAddr
			return nil
		}); err != nil {
			return nil, "", nil, fmt.Errorf("namespace %s: %w", x.ns, err)
		}
	}
	return h, "given", func() error { return nil }, nil
}

// step is one planned run.
type step struct {
	sys  bench.System
	spec bench.Spec
}

// run measures everything o asks for and returns the report; on an
// interrupt it returns what it has so far with the error.
func run(ctx context.Context, o *options) (_ *Report, err error) {
	h, built, done, err := hosts(o)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, done()) }()
	if err := h.Check(); err != nil {
		return nil, err
	}
	mtu, err := h.MTU()
	if err != nil {
		return nil, err
	}
	bud := o.budgetFor()
	rep := &Report{Env: collectEnv(h, o, built, bud)}
	specs := bench.Specs(mtu)

	var plan []step
	var systems []bench.System
	for _, sys := range bench.Systems() {
		if len(o.systems) > 0 && !slices.Contains(o.systems, sys.Name()) {
			continue
		}
		systems = append(systems, sys)
		rep.systems = append(rep.systems, sys.Name())
		for _, spec := range specs {
			if len(o.workloads) > 0 && !slices.Contains(o.workloads, string(spec.Workload)) {
				continue
			}
			if ok, why := bench.AppliesOn(sys, spec, mtu, max(rep.Env.Queues, 1)); !ok {
				rep.skip(sys.Name(), spec, why)
				continue
			}
			plan = append(plan, step{sys, spec})
		}
	}
	for _, spec := range specs {
		if len(o.workloads) == 0 || slices.Contains(o.workloads, string(spec.Workload)) {
			rep.specs = append(rep.specs, spec)
		}
	}

	prog := newProgress(o.progress, len(plan)*o.repeat)
	defer prog.end()
	// Repeats are the outer loop: each system is opened, runs every
	// workload once and is closed, then the next; a burst of other work on
	// the machine then falls on one repeat of several systems, not on
	// every repeat of one.
	samples := make([][]*bench.Sample, len(plan))
	failed := make([]error, len(plan))
	for r := range o.repeat {
		for _, sys := range systems {
			var idx []int
			for i, st := range plan {
				if st.sys == sys && failed[i] == nil {
					idx = append(idx, i)
				}
			}
			if len(idx) == 0 {
				continue
			}
			if err := runSystem(ctx, sys, h, plan, idx, r, o.repeat, bud, o.count, rep, samples, failed, prog); err != nil {
				return rep, err
			}
		}
	}
	var errs []error
	for i, st := range plan {
		if failed[i] != nil {
			rep.skip(st.sys.Name(), st.spec, "failed: "+failed[i].Error())
			errs = append(errs, failed[i])
			continue
		}
		rep.add(aggregate(samples[i]))
	}
	rep.Env.finish()
	return rep, errors.Join(errs...)
}

// runSystem opens sys, runs the steps plan[idx] once (repeat r) and closes
// it. A step that fails is recorded in failed and not run again; the others
// still run. The error returned is an interrupt or a failure to tear down.
func runSystem(ctx context.Context, sys bench.System, h *bench.Hosts, plan []step, idx []int, r, repeat int, bud bench.Budget, count bool,
	rep *Report, samples [][]*bench.Sample, failed []error, prog *progress) (err error) {
	prog.show(fmt.Sprintf("%s: opening", sys.Name()))
	if err := sys.Open(h); err != nil {
		err = fmt.Errorf("%s: %w", sys.Name(), err)
		for _, i := range idx {
			failed[i] = err
			prog.n += repeat - r
		}
		prog.show(err.Error())
		return nil
	}
	defer func() { err = errors.Join(err, sys.Close()) }()
	if m, ok := sys.(bench.Modes); ok {
		rep.Env.XDPMode, rep.Env.XSKMode = m.Modes()
		rep.Env.XDPFallback = m.XDPFallback()
	}
	for _, i := range idx {
		if err := ctx.Err(); err != nil {
			return err
		}
		spec := plan[i].spec
		runOnce := bench.Run
		if count {
			runOnce = bench.RunCounting
		}
		s, err := runOnce(ctx, sys, h, spec, bud)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed[i] = err
			prog.n += repeat - r
			prog.show(fmt.Sprintf("%s %s #%d/%d: failed: %v", sys.Name(), spec, r+1, repeat, err))
			continue
		}
		samples[i] = append(samples[i], s)
		prog.done(fmt.Sprintf("%s %s #%d/%d: %s", sys.Name(), spec, r+1, repeat, brief(s)))
	}
	return nil
}

// brief is a sample in a few words, for the progress line.
func brief(s *bench.Sample) string {
	if s.Hist != nil {
		return fmt.Sprintf("p50 %s µs, %s %s", num(float64(s.Hist.ValueAtQuantile(50))/1e3), num(s.Rate()), s.Unit())
	}
	return fmt.Sprintf("%s %s", num(s.Rate()), s.Unit())
}

// progress is the line on stderr that says where the run is.
type progress struct {
	w     io.Writer
	tty   bool
	total int
	n     int
	t0    time.Time
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, t0: time.Now()}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) done(what string) {
	p.n++
	p.show(what)
}

func (p *progress) show(what string) {
	if p == nil || p.w == nil {
		return
	}
	line := fmt.Sprintf("[%3d/%d %5.1fs] %s", p.n, p.total, time.Since(p.t0).Seconds(), what)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) end() {
	if p != nil && p.w != nil && p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// parseRate reads a rate in bit/s with an optional K, M or G suffix.
func parseRate(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1e9, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "K"):
		mult, s = 1e3, strings.TrimSuffix(s, "K")
	}
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 || n*mult > 100e9 {
		return 0, fmt.Errorf("-rate %q: want a positive rate up to 100G", s)
	}
	return n * mult, nil
}
