package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/sdx-project/sdx/bench"
)

// Reference is the system every ratio is taken against: kernel TCP with a
// spinning reader, the fastest way to drive kernel TCP without changing
// the kernel.
const Reference = "tcp-spin"

// Report is everything a run produced; it is what -json writes.
type Report struct {
	Env     Env      `json:"env"`
	Results []Result `json:"results"`
	Skipped []Skip   `json:"skipped,omitempty"`

	systems []string     // in table order
	specs   []bench.Spec // in table order
}

// Result is one figure line: one system, one workload, the median of the
// repeats and their spread.
type Result struct {
	System    string  `json:"system"`
	Workload  string  `json:"workload"`
	Size      int     `json:"size"`
	Conns     int     `json:"conns"`
	P50       float64 `json:"p50_us,omitempty"`
	P99       float64 `json:"p99_us,omitempty"`
	P999      float64 `json:"p999_us,omitempty"`
	Max       float64 `json:"max_us,omitempty"`
	Rate      float64 `json:"rate"`
	Unit      string  `json:"unit"`
	CPUPerMsg float64 `json:"cpu_us_per_msg"`
	// Loss is the fraction of datagrams or transactions lost (median).
	Loss    float64 `json:"loss,omitempty"`
	Repeats int     `json:"repeats"`
	// Spread is [min, max] over the repeats of each figure above.
	Spread map[string][2]float64 `json:"spread"`
	// Counts (-count) are each event of bench.CountNames per CountsPer
	// (a transaction, a message, ...), the median of the repeats, with
	// their spread; CountsMissing names the events not counted, and why.
	Counts        map[string]float64    `json:"counts,omitempty"`
	CountsPer     string                `json:"counts_per,omitempty"`
	CountsSpread  map[string][2]float64 `json:"counts_spread,omitempty"`
	CountsMissing map[string]string     `json:"counts_missing,omitempty"`

	hist *hdrhistogram.Histogram // rr: all repeats merged, for the plot
}

// Skip is a system and workload with no figures, and why.
type Skip struct {
	System   string `json:"system"`
	Workload string `json:"workload"`
	Size     int    `json:"size"`
	Conns    int    `json:"conns"`
	Reason   string `json:"reason"`
}

func (r *Report) skip(system string, spec bench.Spec, why string) {
	r.Skipped = append(r.Skipped, Skip{System: system, Workload: string(spec.Workload), Size: spec.Size, Conns: spec.Conns, Reason: why})
}

func (r *Report) add(res Result) { r.Results = append(r.Results, res) }

// find returns the result of system for spec.
func (r *Report) find(system string, spec bench.Spec) *Result {
	for i := range r.Results {
		x := &r.Results[i]
		if x.System == system && x.Workload == string(spec.Workload) && x.Size == spec.Size && x.Conns == spec.Conns {
			return x
		}
	}
	return nil
}

func (r *Report) skipped(system string, spec bench.Spec) *Skip {
	for i := range r.Skipped {
		x := &r.Skipped[i]
		if x.System == system && x.Workload == string(spec.Workload) && x.Size == spec.Size && x.Conns == spec.Conns {
			return x
		}
	}
	return nil
}

// figures are the names of a result's figures, in JSON and spread keys.
var figures = []string{"p50_us", "p99_us", "p999_us", "max_us", "rate", "cpu_us_per_msg", "loss"}

// field returns the figure of the given name (a key of figures).
func (r *Result) field(name string) *float64 {
	switch name {
	case "p50_us":
		return &r.P50
	case "p99_us":
		return &r.P99
	case "p999_us":
		return &r.P999
	case "max_us":
		return &r.Max
	case "rate":
		return &r.Rate
	case "cpu_us_per_msg":
		return &r.CPUPerMsg
	case "loss":
		return &r.Loss
	}
	panic("unknown figure " + name)
}

func (r *Result) figure(name string) float64 { return *r.field(name) }

// aggregate turns the repeats of one run into a Result: each figure is the
// median of the repeats (the mean of the middle two for an even count),
// and the spread its min and max.
func aggregate(samples []*bench.Sample) Result {
	s0 := samples[0]
	res := Result{
		System: s0.System, Workload: string(s0.Workload), Size: s0.Size, Conns: s0.Conns,
		Unit: s0.Unit(), Repeats: len(samples), Spread: map[string][2]float64{},
	}
	per := map[string][]float64{}
	for _, s := range samples {
		if s.Hist != nil {
			per["p50_us"] = append(per["p50_us"], us(s.Hist.ValueAtQuantile(50)))
			per["p99_us"] = append(per["p99_us"], us(s.Hist.ValueAtQuantile(99)))
			per["p999_us"] = append(per["p999_us"], us(s.Hist.ValueAtQuantile(99.9)))
			per["max_us"] = append(per["max_us"], us(s.Hist.Max()))
			if res.hist == nil {
				res.hist = bench.NewHist()
			}
			res.hist.Merge(s.Hist)
		}
		per["rate"] = append(per["rate"], s.Rate())
		per["cpu_us_per_msg"] = append(per["cpu_us_per_msg"], s.CPUPerMsg())
		per["loss"] = append(per["loss"], s.Loss())
	}
	for _, f := range figures {
		v := per[f]
		if len(v) == 0 || (f == "loss" && slices.Max(v) == 0) {
			continue
		}
		*res.field(f) = median(v)
		res.Spread[f] = [2]float64{slices.Min(v), slices.Max(v)}
	}
	aggregateCounts(&res, samples)
	return res
}

// aggregateCounts sets res's counts from the repeats' (-count): an event
// is given only when every repeat counted it; otherwise it is missing,
// with the first reason seen.
func aggregateCounts(res *Result, samples []*bench.Sample) {
	if samples[0].Counts == nil {
		return
	}
	res.Counts, res.CountsSpread = map[string]float64{}, map[string][2]float64{}
	for _, name := range bench.CountNames {
		var v []float64
		for _, s := range samples {
			if why, miss := s.Counts.Missing[name]; miss {
				if res.CountsMissing == nil {
					res.CountsMissing = map[string]string{}
				}
				res.CountsMissing[name] = why
				break
			}
			per, unit := s.Per()
			if _, ok := per[name]; !ok {
				break
			}
			v = append(v, per[name])
			res.CountsPer = unit
		}
		if len(v) == len(samples) {
			res.Counts[name] = median(v)
			res.CountsSpread[name] = [2]float64{slices.Min(v), slices.Max(v)}
		}
	}
}

func us(ns int64) float64 { return float64(ns) / 1e3 }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// writeOutputs prints the table and writes the files o asks for.
func writeOutputs(w io.Writer, rep *Report, o *options) error {
	if err := Markdown(w, rep); err != nil {
		return err
	}
	if o.jsonFile != "" {
		if err := writeJSON(o.jsonFile, rep); err != nil {
			return err
		}
	}
	if o.plotFile != "" {
		if err := writePlot(o.plotFile, rep); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(name string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}

// column is one figure column of a workload's table.
type column struct {
	figure string // key in figures
	title  string
	ratio  bool // show the ratio to the reference
}

func columns(w bench.Workload) []column {
	switch w {
	case bench.RR:
		return []column{
			{"p50_us", "p50 µs", true}, {"p99_us", "p99 µs", true}, {"p999_us", "p99.9 µs", true},
			{"max_us", "max µs", true}, {"rate", "tps", true}, {"cpu_us_per_msg", "CPU µs/tx", true},
			{"loss", "lost", false},
		}
	case bench.MsgRate:
		return []column{{"rate", "msg/s", true}, {"cpu_us_per_msg", "CPU µs/msg", true}, {"loss", "lost", false}}
	case bench.Bulk:
		return []column{{"rate", "Gbit/s", true}, {"cpu_us_per_msg", "CPU µs/64 KiB", true}, {"loss", "lost", false}}
	case bench.ConnRate:
		return []column{{"rate", "conn/s", true}, {"cpu_us_per_msg", "CPU µs/conn", true}}
	case bench.Idle:
		return []column{{"rate", "CPU % of one core", true}}
	case bench.HTTP:
		return []column{
			{"p50_us", "p50 µs", true}, {"p99_us", "p99 µs", true}, {"p999_us", "p99.9 µs", true},
			{"rate", "req/s", true}, {"cpu_us_per_msg", "CPU µs/req", true},
		}
	}
	return nil
}

// title names a workload's table; mtu is the link's.
func title(s bench.Spec, mtu int) string {
	switch s.Workload {
	case bench.RR:
		return fmt.Sprintf("Ping-pong (rr), %s messages, one connection", bench.SizeString(s.Size))
	case bench.MsgRate:
		if s.Size == bench.FrameMessage(mtu) {
			return fmt.Sprintf("One-way message rate (msgrate), %s messages (the most one raw frame carries at MTU %d), one connection", bench.SizeString(s.Size), mtu)
		}
		return fmt.Sprintf("One-way message rate (msgrate), %s messages, one connection", bench.SizeString(s.Size))
	case bench.Bulk:
		if s.Conns == 1 {
			return "Bulk throughput (bulk), one connection"
		}
		return fmt.Sprintf("Bulk throughput (bulk), %d connections", s.Conns)
	case bench.ConnRate:
		return "Connection setup rate (connrate): connect + accept + close"
	case bench.Idle:
		return "Idle connection (idle): process CPU while one connection is open and quiet"
	case bench.HTTP:
		return fmt.Sprintf("net/http (http), %s bodies, HTTP/1.1 keep-alive, %d client goroutine(s), one connection each", bench.SizeString(s.Size), s.Conns)
	}
	return s.String()
}

// Markdown writes the environment and one table per workload. Each cell is
// the median of the repeats, its ratio to the reference's median, and the
// spread (min–max) of the repeats.
func Markdown(w io.Writer, rep *Report) error {
	var b strings.Builder
	b.WriteString("## sdxbench\n\n")
	rep.Env.markdown(&b)
	fmt.Fprintf(&b, "\nEach cell: median of %d repeats, ×ratio to the same figure of %s (kernel TCP, spinning reader), (min–max over the repeats).\n", rep.Env.Repeats, Reference)
	for _, spec := range rep.specs {
		cols := columns(spec.Workload)
		fmt.Fprintf(&b, "\n### %s\n\n| system |", title(spec, rep.Env.MTU))
		for _, c := range cols {
			if c.ratio {
				fmt.Fprintf(&b, " %s (× %s) |", c.title, Reference)
			} else {
				fmt.Fprintf(&b, " %s |", c.title)
			}
		}
		b.WriteString("\n|---|")
		for range cols {
			b.WriteString("---:|")
		}
		b.WriteString("\n")
		ref := rep.find(Reference, spec)
		for _, sys := range rep.systems {
			res := rep.find(sys, spec)
			if res == nil {
				why := "not run"
				if sk := rep.skipped(sys, spec); sk != nil {
					why = sk.Reason
				}
				fmt.Fprintf(&b, "| %s | %s |%s\n", sys, why, strings.Repeat(" |", len(cols)-1))
				continue
			}
			fmt.Fprintf(&b, "| %s |", sys)
			for _, c := range cols {
				fmt.Fprintf(&b, " %s |", cell(res, ref, c))
			}
			b.WriteString("\n")
		}
	}
	rep.counts(&b)
	rep.targets(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// countTitles are the columns of the counts table, by bench.CountNames.
var countTitles = map[string]string{
	"syscalls": "syscalls", "futex": "futex calls", "context_switches": "context switches",
	"wakeups": "wake-ups", "cpu_migrations": "CPU migrations", "cpu_ns": "CPU µs",
}

// counts writes the table of -count: each event per message, the median
// of the repeats and their spread; an event not counted says n/a, and a
// note below says why.
func (rep *Report) counts(b *strings.Builder) {
	var rows []*Result
	for _, spec := range rep.specs {
		for _, sys := range rep.systems {
			if res := rep.find(sys, spec); res != nil && res.Counts != nil {
				rows = append(rows, res)
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("\n### Counts per message (-count), over every thread of the run's processes\n\n| system | workload | per |")
	for _, name := range bench.CountNames {
		fmt.Fprintf(b, " %s |", countTitles[name])
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---:|", len(bench.CountNames)) + "\n")
	why := map[string]string{}
	for _, res := range rows {
		spec := bench.Spec{Workload: bench.Workload(res.Workload), Size: res.Size, Conns: res.Conns}
		fmt.Fprintf(b, "| %s | %s | %s |", res.System, spec, res.CountsPer)
		for _, name := range bench.CountNames {
			v, ok := res.Counts[name]
			if !ok {
				b.WriteString(" n/a |")
				if w, miss := res.CountsMissing[name]; miss {
					why[name] = w
				}
				continue
			}
			sp := res.CountsSpread[name]
			if name == "cpu_ns" {
				v, sp = v/1e3, [2]float64{sp[0] / 1e3, sp[1] / 1e3}
			}
			s := num(v)
			if res.Repeats > 1 {
				s += fmt.Sprintf(" (%s–%s)", num(sp[0]), num(sp[1]))
			}
			fmt.Fprintf(b, " %s |", s)
		}
		b.WriteString("\n")
	}
	for _, name := range bench.CountNames {
		if w, ok := why[name]; ok {
			fmt.Fprintf(b, "\nNot counted: %s: %s\n", countTitles[name], w)
		}
	}
}

// target is a goal the project set itself, as a ratio of two medians of
// one run (or, with absolute, a figure of its own), at any MTU or at one.
type target struct {
	what     string
	system   string // the system judged
	spec     bench.Spec
	figure   string
	against  string  // the reference system
	limit    float64 // the ratio (or the absolute figure) to stay at or below (atMost), or to reach
	atMost   bool
	absolute bool // limit bounds the figure itself, not a ratio
	mtu      int  // judged only on a link of this MTU; 0: on any
}

var (
	rr64    = bench.Spec{Workload: bench.RR, Size: 64, Conns: 1}
	rr1k    = bench.Spec{Workload: bench.RR, Size: 1024, Conns: 1}
	msg64   = bench.Spec{Workload: bench.MsgRate, Size: 64, Conns: 1}
	idle    = bench.Spec{Workload: bench.Idle, Conns: 1}
	conn    = bench.Spec{Workload: bench.ConnRate, Conns: 1}
	http1   = bench.Spec{Workload: bench.HTTP, Size: 64, Conns: 1}
	http32  = bench.Spec{Workload: bench.HTTP, Size: 64, Conns: 32}
	bulk1   = bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 1}
	bulk4   = bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 4}
	rr16k   = bench.Spec{Workload: bench.RR, Size: 16 << 10, Conns: 1}
	targets = []target{
		// What a net.Conn user gets (the switch).
		{"64 B rr p50 ≤ 0.8 × tcp-gonet", "sdx-conn", rr64, "p50_us", "tcp-gonet", 0.8, true, false, 0},
		{"64 B rr p50 ≤ 1.3 × xsk-floor-park (the floor that waits the same way)", "sdx-conn", rr64, "p50_us", "xsk-floor-park", 1.3, true, false, 0},
		{"64 B rr p99 ≤ 0.8 × tcp-gonet", "sdx-conn", rr64, "p99_us", "tcp-gonet", 0.8, true, false, 0},
		{"1 KiB rr p50 ≤ 0.6 × tcp-gonet", "sdx-conn", rr1k, "p50_us", "tcp-gonet", 0.6, true, false, 0},
		{"64 B msgrate ≥ 1.0 × sdx-adaptive (the switch adds nothing)", "sdx-conn", msg64, "rate", "sdx-adaptive", 1, false, false, 0},
		{"http, 1 client: p50 ≤ 0.7 × tcp-gonet", "sdx-conn", http1, "p50_us", "tcp-gonet", 0.7, true, false, 0},
		{"http, 32 clients: req/s ≥ 1.0 × tcp-gonet", "sdx-conn", http32, "rate", "tcp-gonet", 1, false, false, 0},
		{"connrate ≥ 1.0 × tcp-gonet", "sdx-conn", conn, "rate", "tcp-gonet", 1, false, false, 0},
		{"idle connection ≤ 0.5% of a core", "sdx-conn", idle, "rate", "", 0.5, true, true, 0},
		{"MTU 1500: bulk, 1 connection ≥ 0.8 × xsk-floor bulk", "sdx-conn", bulk1, "rate", "xsk-floor", 0.8, false, false, 1500},
		{"MTU 9000: bulk, 1 connection ≥ 0.8 × xsk-floor bulk", "sdx-conn", bulk1, "rate", "xsk-floor", 0.8, false, false, 9000},
		{"MTU 9000: bulk, 1 connection ≥ 0.7 × tcp-spin", "sdx-conn", bulk1, "rate", "tcp-spin", 0.7, false, false, 9000},
		{"MTU 9000: bulk, 4 connections ≥ 0.7 × tcp-gonet", "sdx-conn", bulk4, "rate", "tcp-gonet", 0.7, false, false, 9000},
		{"MTU 9000: 16 KiB rr p50 ≤ 1.0 × tcp-spin", "sdx-conn", rr16k, "p50_us", "tcp-spin", 1, true, false, 9000},
		{"MTU 9000: CPU per 64 KiB of bulk ≤ 2 × tcp-spin", "sdx-conn", bulk1, "cpu_us_per_msg", "tcp-spin", 2, true, false, 9000},
		{"MTU 65000: 16 KiB rr p50 ≤ 0.8 × tcp-spin", "sdx-conn", rr16k, "p50_us", "tcp-spin", 0.8, true, false, 65000},
		// Two processes, as deployed (issue #20).
		{"two processes: 64 B rr p50 ≤ 0.9 × tcp-gonet-2p", "sdx-conn-2p", rr64, "p50_us", "tcp-gonet-2p", 0.9, true, false, 0},
		{"two processes: 64 B rr p99 ≤ 1.0 × tcp-gonet-2p", "sdx-conn-2p", rr64, "p99_us", "tcp-gonet-2p", 1, true, false, 0},
		{"two processes: 64 B rr CPU per transaction ≤ 1.0 × tcp-gonet-2p", "sdx-conn-2p", rr64, "cpu_us_per_msg", "tcp-gonet-2p", 1, true, false, 0},
		{"two processes: 64 B rr p50 ≤ 1.3 × xsk-floor-2p", "sdx-conn-2p", rr64, "p50_us", "xsk-floor-2p", 1.3, true, false, 0},
		{"two processes: http, 1 client: p50 ≤ 0.9 × tcp-gonet-2p", "sdx-conn-2p", http1, "p50_us", "tcp-gonet-2p", 0.9, true, false, 0},
		{"two processes: http, 32 clients: req/s ≥ 1.1 × tcp-gonet-2p", "sdx-conn-2p", http32, "rate", "tcp-gonet-2p", 1.1, false, false, 0},
		{"two processes: idle connection ≤ 0.5% of a core (both processes)", "sdx-conn-2p", idle, "rate", "", 0.5, true, true, 0},
		// The provider's own verbs (an inner figure).
		{"64 B rr p50 ≤ 0.5 × tcp-spin", "sdx-adaptive", rr64, "p50_us", "tcp-spin", 0.5, true, false, 0},
		{"64 B rr p50 ≤ 1.3 × xsk-floor", "sdx-adaptive", rr64, "p50_us", "xsk-floor", 1.3, true, false, 0},
		{"64 B msgrate ≥ 5 × tcp-spin", "sdx-adaptive", msg64, "rate", "tcp-spin", 5, false, false, 0},
		{"MTU 1500: bulk, 1 connection ≥ 0.8 × xsk-floor bulk", "sdx-adaptive", bulk1, "rate", "xsk-floor", 0.8, false, false, 1500},
		{"MTU 9000: bulk, 1 connection ≥ 0.8 × xsk-floor bulk", "sdx-adaptive", bulk1, "rate", "xsk-floor", 0.8, false, false, 9000},
		{"MTU 9000: bulk, 1 connection ≥ 0.7 × tcp-spin", "sdx-adaptive", bulk1, "rate", "tcp-spin", 0.7, false, false, 9000},
		{"MTU 9000: 16 KiB rr p50 ≤ 1.0 × tcp-spin", "sdx-adaptive", rr16k, "p50_us", "tcp-spin", 1, true, false, 9000},
		{"MTU 9000: CPU per 64 KiB of bulk ≤ 2 × tcp-spin", "sdx-adaptive", bulk1, "cpu_us_per_msg", "tcp-spin", 2, true, false, 9000},
		{"MTU 65000: 16 KiB rr p50 ≤ 0.8 × tcp-spin", "sdx-adaptive", rr16k, "p50_us", "tcp-spin", 0.8, true, false, 65000},
	}
)

// judgedAt reports whether t applies on a link of the given MTU.
func (t *target) judgedAt(mtu int) bool { return t.mtu == 0 || t.mtu == mtu }

// targets writes the goals with what this run measured: those of any MTU
// and those of the link's.
func (rep *Report) targets(b *strings.Builder) {
	any := false
	for _, t := range targets {
		if t.judgedAt(rep.Env.MTU) && rep.find(t.system, t.spec) != nil {
			any = true
		}
	}
	if !any {
		return
	}
	b.WriteString("\n### Targets, from this run's medians\n\n| system | target | measured | verdict |\n|---|---|---:|---|\n")
	for _, t := range targets {
		res := rep.find(t.system, t.spec)
		if res == nil || !t.judgedAt(rep.Env.MTU) {
			continue
		}
		v := res.figure(t.figure)
		measured := num(v)
		if !t.absolute {
			ref := rep.find(t.against, t.spec)
			if ref == nil || ref.figure(t.figure) == 0 {
				fmt.Fprintf(b, "| %s | %s | – (%s not run) | |\n", t.system, t.what, t.against)
				continue
			}
			v /= ref.figure(t.figure)
			measured = "×" + ratioString(v)
		}
		met := v >= t.limit
		if t.atMost {
			met = v <= t.limit
		}
		verdict := "missed"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", t.system, t.what, measured, verdict)
	}
}

// cell formats one figure: "7.12 ×1.00 (6.90–7.41)".
func cell(res, ref *Result, c column) string {
	v := res.figure(c.figure)
	sp, ok := res.Spread[c.figure]
	if !ok {
		if c.figure == "loss" {
			return ""
		}
		return "–"
	}
	if c.figure == "loss" {
		return fmt.Sprintf("%s%% (%s–%s%%)", num(100*v), num(100*sp[0]), num(100*sp[1]))
	}
	s := num(v)
	if c.ratio && ref != nil {
		if rv := ref.figure(c.figure); rv > 0 {
			s += " ×" + ratioString(v/rv)
		}
	}
	if res.Repeats > 1 {
		s += fmt.Sprintf(" (%s–%s)", num(sp[0]), num(sp[1]))
	}
	return s
}

// num writes a figure with three significant digits, large ones with a
// k or M suffix.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return trim(v/1e6, 3) + "M"
	case a >= 1e4:
		return trim(v/1e3, 3) + "k"
	}
	return trim(v, 3)
}

func ratioString(v float64) string { return fmt.Sprintf("%.2f", v) }

// trim formats v with sig significant digits and no exponent.
func trim(v float64, sig int) string {
	if v == 0 {
		return "0"
	}
	d := sig - 1 - int(math.Floor(math.Log10(math.Abs(v))))
	if d < 0 {
		d = 0
	}
	return fmt.Sprintf("%.*f", d, v)
}
