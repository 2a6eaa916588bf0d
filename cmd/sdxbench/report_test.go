package main

import (
	"bytes"
	"encoding/json"
	"image/color"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bench"
)

// fakeSample is a sample with known figures: round trips of base, 2×base
// and 10×base µs (rr), or count messages in one second.
func fakeSample(system string, spec bench.Spec, base int64, count int64) *bench.Sample {
	s := &bench.Sample{Spec: spec, System: system, Count: count, Elapsed: time.Second, CPU: time.Duration(count) * time.Microsecond}
	if spec.Workload == bench.RR {
		s.Hist = bench.NewHist()
		for i := 0; i < 980; i++ {
			s.Hist.RecordValue(base * 1000)
		}
		for i := 0; i < 19; i++ {
			s.Hist.RecordValue(2 * base * 1000)
		}
		s.Hist.RecordValue(10 * base * 1000)
	}
	return s
}

func fakeReport() *Report {
	rr := bench.Spec{Workload: bench.RR, Size: 64, Conns: 1}
	bulk := bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 1}
	rep := &Report{
		Env:     Env{Repeats: 3, Date: "2026-01-02T03:04:05Z"},
		systems: []string{"sdx-busy", "tcp-spin", "xsk-floor"},
		specs:   []bench.Spec{rr, bulk},
	}
	for _, sys := range []struct {
		name string
		base int64
	}{{"tcp-spin", 8}, {"xsk-floor", 4}} {
		var samples []*bench.Sample
		for i, n := range []int64{1000, 3000, 2000} {
			samples = append(samples, fakeSample(sys.name, rr, sys.base+int64(i), n))
		}
		rep.add(aggregate(samples))
	}
	rep.add(aggregate([]*bench.Sample{fakeSample("tcp-spin", bulk, 0, 1<<30)}))
	rep.skip("sdx-busy", rr, "failed: something broke")
	rep.skip("sdx-busy", bulk, "failed: something broke")
	rep.skip("xsk-floor", bulk, "datagrams, no stream to fill")
	return rep
}

func TestAggregateMedianAndSpread(t *testing.T) {
	rep := fakeReport()
	r := rep.find("tcp-spin", bench.Spec{Workload: bench.RR, Size: 64, Conns: 1})
	if r == nil {
		t.Fatal("no tcp-spin rr result")
	}
	// p50 of the repeats: 8, 9, 10 µs (HDR rounds within 0.1%).
	if r.P50 < 8.99 || r.P50 > 9.01 {
		t.Errorf("p50 median %v, want 9", r.P50)
	}
	if sp := r.Spread["p50_us"]; sp[0] < 7.99 || sp[0] > 8.01 || sp[1] < 9.99 || sp[1] > 10.01 {
		t.Errorf("p50 spread %v, want [8 10]", sp)
	}
	if r.Rate != 2000 || r.Spread["rate"] != [2]float64{1000, 3000} {
		t.Errorf("rate %v spread %v, want 2000 [1000 3000]", r.Rate, r.Spread["rate"])
	}
	if !(r.P50 <= r.P99 && r.P99 <= r.P999 && r.P999 <= r.Max) {
		t.Errorf("percentiles out of order: %v %v %v %v", r.P50, r.P99, r.P999, r.Max)
	}
	if r.hist.TotalCount() != 3000 {
		t.Errorf("merged histogram holds %d, want 3000", r.hist.TotalCount())
	}
	if _, ok := r.Spread["loss"]; ok || r.Loss != 0 {
		t.Error("loss reported for a run without loss")
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of an even count: %v, want 2.5", got)
	}
}

// markdown renders rep as Markdown tables.
func markdown(t *testing.T, rep *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := Markdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkTable fails t for each of want that table lacks.
func checkTable(t *testing.T, table string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(table, w) {
			t.Errorf("table lacks %q:\n%s", w, table)
		}
	}
}

func TestMarkdown(t *testing.T) {
	out := markdown(t, fakeReport())
	checkTable(t, out,
		"### Ping-pong (rr), 64 B messages, one connection",
		"| system | p50 µs (× tcp-spin) | p99 µs (× tcp-spin) |",
		"| tcp-spin | 9.01 ×1.00 (8.00–10.0) |",
		"| xsk-floor | 5.00 ×0.56 (4.00–6.00) |",
		"| sdx-busy | failed: something broke |",
		"| xsk-floor | datagrams, no stream to fill |",
		"### Bulk throughput (bulk), one connection",
		"| tcp-spin | 8.59 ×1.00 |",
		"median of 3 repeats",
	)
	// Every row has as many cells as its table's header.
	header := 0
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "| system |"):
			header = strings.Count(line, "|")
		case strings.HasPrefix(line, "| "):
			if n := strings.Count(line, "|"); n != header {
				t.Errorf("row has %d bars, its header %d: %s", n, header, line)
			}
		}
	}
}

// TestTargetsByMTU: a target of one MTU is judged only on a link of that
// MTU; the floor's bulk is the reference of the bulk targets.
func TestTargetsByMTU(t *testing.T) {
	bulk := bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 1}
	for _, c := range []struct {
		mtu       int
		want, not string
	}{
		{1500, "| sdx-conn | MTU 1500: bulk, 1 connection ≥ 0.8 × xsk-floor bulk | ×0.75 | missed |", "MTU 9000"},
		{9000, "| sdx-conn | MTU 9000: bulk, 1 connection ≥ 0.8 × xsk-floor bulk | ×0.75 | missed |", "MTU 1500"},
		{65000, "### Targets", "bulk, 1 connection"},
	} {
		rep := &Report{
			Env:     Env{Repeats: 1, MTU: c.mtu},
			systems: []string{"sdx-conn", "xsk-floor"},
			specs:   []bench.Spec{bulk},
		}
		rep.add(aggregate([]*bench.Sample{fakeSample("sdx-conn", bulk, 0, 3<<30)}))
		rep.add(aggregate([]*bench.Sample{fakeSample("xsk-floor", bulk, 0, 4<<30)}))
		rep.add(aggregate([]*bench.Sample{fakeSample("sdx-conn", idle, 0, 1)}))
		out := markdown(t, rep)
		if !strings.Contains(out, c.want) || strings.Contains(out, c.not) {
			t.Errorf("MTU %d: want %q and no %q in:\n%s", c.mtu, c.want, c.not, out)
		}
	}
}

func TestJSONShape(t *testing.T) {
	b, err := json.Marshal(fakeReport())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Env     map[string]any   `json:"env"`
		Results []map[string]any `json:"results"`
		Skipped []map[string]any `json:"skipped"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Env == nil || len(doc.Results) != 3 || len(doc.Skipped) != 3 {
		t.Fatalf("shape: env %v, %d results, %d skipped", doc.Env != nil, len(doc.Results), len(doc.Skipped))
	}
	for _, k := range []string{"kernel", "cpus", "go", "pinning", "xdp_mode", "xsk_mode", "veth_mtu", "date"} {
		if _, ok := doc.Env[k]; !ok {
			t.Errorf("env lacks %q", k)
		}
	}
	rr := doc.Results[0]
	for _, k := range []string{"system", "workload", "size", "conns", "p50_us", "p99_us", "p999_us", "max_us", "rate", "unit", "cpu_us_per_msg", "spread"} {
		if _, ok := rr[k]; !ok {
			t.Errorf("rr result lacks %q: %v", k, rr)
		}
	}
	if rr["system"] != "tcp-spin" || rr["workload"] != "rr" || rr["unit"] != "tps" || rr["size"] != 64.0 {
		t.Errorf("rr result: %v", rr)
	}
	bulk := doc.Results[2]
	if bulk["unit"] != "Gbit/s" || bulk["conns"] != 1.0 {
		t.Errorf("bulk result: %v", bulk)
	}
	if _, ok := bulk["p50_us"]; ok {
		t.Error("bulk result carries latency figures")
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 7.123: "7.12", 79.34: "79.3", 1234: "1234", 12345: "12.3k",
		123456: "123k", 1234567: "1.23M", 0.0261: "0.0261",
	} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestPlot(t *testing.T) {
	img, err := Plot(fakeReport())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[color.RGBA]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			seen[img.RGBAAt(x, y)] = true
		}
	}
	for _, sys := range []string{"tcp-spin", "xsk-floor"} {
		if !seen[systemStyle[sys].color] {
			t.Errorf("no %s curve in the plot", sys)
		}
	}
	if _, err := Plot(&Report{}); err == nil {
		t.Error("plot of an empty report did not fail")
	}
}

// Every system has a style of its own: two systems that share a dash
// pattern differ in grey (luminance) by at least a fifth of the range.
func TestPlotStyles(t *testing.T) {
	grey := func(c color.RGBA) float64 { return 0.299*float64(c.R) + 0.587*float64(c.G) + 0.114*float64(c.B) }
	var names []string
	for _, s := range bench.Systems() {
		names = append(names, s.Name())
		if _, ok := systemStyle[s.Name()]; !ok {
			t.Errorf("system %s has no style of its own", s.Name())
		}
	}
	for i, a := range names {
		for _, b := range names[i+1:] {
			sa, sb := styleOf(a), styleOf(b)
			if slices.Equal(sa.dash, sb.dash) && math.Abs(grey(sa.color)-grey(sb.color)) < 51 {
				t.Errorf("%s and %s share a dash pattern and look alike in grey (%.0f, %.0f)", a, b, grey(sa.color), grey(sb.color))
			}
		}
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-repeat", "0"},
		{"-systems", "nope"},
		{"-workloads", "ping"},
		{"-ns-a", "x"},
		{"-cpu-client", "1", "-cpu-server", "1"},
		{"extra"},
	} {
		// -repeat 0 means the default, so it passes; the others fail.
		_, err := parseFlags(args)
		if (err == nil) != (args[0] == "-repeat") {
			t.Errorf("parseFlags(%q): %v", args, err)
		}
	}
	o, err := parseFlags([]string{"-quick"})
	if err != nil || o.repeat != 3 || o.budgetFor().Limit != bench.QuickBudget.Limit {
		t.Errorf("-quick: %+v, %v", o, err)
	}
}

// Addresses outside 198.18.0.0/15 are refused before anything is sent.
func TestGivenAddressesOutsideRange(t *testing.T) {
	// Built from bytes: these addresses are only ever refused.
	outside1 := netip.AddrFrom4([4]byte{10, 0, 0, 1}).String()
	outside2 := netip.AddrFrom4([4]byte{198, 20, 0, 2}).String()
	for _, addrs := range [][2]string{{outside1, "198.18.0.2"}, {"198.18.0.1", outside2}, {"198.18.0.1", "::1"}} {
		o, err := parseFlags([]string{"-ns-a", "a", "-ns-b", "b", "-if-a", "a", "-if-b", "b", "-addr-a", addrs[0], "-addr-b", addrs[1]})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := hosts(o); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("addresses %v: %v, want a refusal", addrs, err)
		}
	}
}

// TestCountsTable: the counts of -count are per message, the median of
// the repeats with their spread; an event one repeat could not count is
// n/a with its reason, never a number; a run without -count has no
// counts table.
func TestCountsTable(t *testing.T) {
	rr := bench.Spec{Workload: bench.RR, Size: 64, Conns: 1}
	var samples []*bench.Sample
	for i, n := range []int64{1000, 3000, 2000} {
		s := fakeSample("tcp-gonet-2p", rr, 8, n)
		s.Counts = &bench.Counts{Totals: map[string]uint64{
			"syscalls": uint64(10 * n), "futex": uint64(n), "context_switches": uint64(3 * n),
			"wakeups": uint64(2 * n), "cpu_migrations": 0, "cpu_ns": uint64(40000 * n),
		}}
		if i == 1 {
			delete(s.Counts.Totals, "wakeups")
			s.Counts.Missing = map[string]string{"wakeups": "tracepoint sched/sched_wakeup: no tracefs"}
		}
		samples = append(samples, s)
	}
	rep := &Report{Env: Env{Repeats: 3}, systems: []string{"tcp-gonet-2p"}, specs: []bench.Spec{rr}}
	rep.add(aggregate(samples))
	r := rep.find("tcp-gonet-2p", rr)
	if r.CountsPer != "transaction" || r.Counts["syscalls"] != 10 || r.Counts["cpu_ns"] != 40000 || r.Counts["cpu_migrations"] != 0 {
		t.Errorf("counts %v per %q", r.Counts, r.CountsPer)
	}
	if _, ok := r.Counts["wakeups"]; ok || !strings.Contains(r.CountsMissing["wakeups"], "no tracefs") {
		t.Errorf("wake-ups counted in 2 of 3 repeats: %v, missing %v", r.Counts["wakeups"], r.CountsMissing)
	}
	checkTable(t, markdown(t, rep),
		"### Counts per message (-count)",
		"| tcp-gonet-2p | rr 64 B | transaction | 10.0 (10.0–10.0) | 1.00 (1.00–1.00) | 3.00 (3.00–3.00) | n/a | 0 (0–0) | 40.0 (40.0–40.0) |",
		"Not counted: wake-ups: tracepoint sched/sched_wakeup: no tracefs",
	)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"counts_per":"transaction"`)) || !bytes.Contains(b, []byte(`"counts_missing":{"wakeups"`)) {
		t.Errorf("JSON: %s", b)
	}
	if strings.Contains(markdown(t, fakeReport()), "Counts per message") {
		t.Error("a counts table without -count")
	}
}
