package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bench"
	"github.com/sdx-project/sdx/internal/testutil"
)

// tinyBudget keeps a run of every system and workload to seconds.
var tinyBudget = bench.Budget{
	Transactions: 300, Warmup: 30, Messages: 20000, Bytes: 16 << 20, Conns: 100,
	Limit: 60 * time.Millisecond, Setup: 3 * time.Second,
}

// TestMain serves as the child process of the two-process systems, which
// start this binary again.
func TestMain(m *testing.M) {
	if bench.IsChild() {
		os.Exit(bench.ServeChild())
	}
	os.Exit(m.Run())
}

func privileged(t *testing.T) {
	t.Helper()
	testutil.Privileged(t)
	if runtime.NumCPU() < 2 {
		testutil.SkipOrFail(t, "needs two CPUs: the client and the server spin on one each")
	}
}

// TestRun runs every system through every workload it supports, briefly,
// and checks the JSON, the table and the plot.
func TestRun(t *testing.T) {
	privileged(t)
	testutil.CheckFDs(t)
	dir := t.TempDir()
	o, rep := tinyRun(t, "-repeat", "2", "-json", filepath.Join(dir, "r.json"), "-plot", filepath.Join(dir, "r.png"))
	var out bytes.Buffer
	if err := writeOutputs(&out, rep, o); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(o.jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Env     Env      `json:"env"`
		Results []Result `json:"results"`
		Skipped []Skip   `json:"skipped"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Env.Kernel == "" || doc.Env.CPUs < 2 || doc.Env.XDPMode == "not measured" || doc.Env.XSKMode == "not measured" || doc.Env.MTU != 1500 {
		t.Errorf("env incomplete: %+v", doc.Env)
	}
	got := map[string]Result{}
	for _, r := range doc.Results {
		key := fmt.Sprintf("%s/%s/%d/%d", r.System, r.Workload, r.Size, r.Conns)
		got[key] = r
		checkResult(t, key, r)
	}
	for _, sys := range bench.Systems() {
		for _, spec := range bench.Specs(doc.Env.MTU) {
			key := fmt.Sprintf("%s/%s/%d/%d", sys.Name(), spec.Workload, spec.Size, spec.Conns)
			ok, _ := bench.Applies(sys, spec, doc.Env.MTU)
			if _, has := got[key]; has != ok {
				t.Errorf("%s: result present %v, applies %v", key, has, ok)
			}
		}
	}
	for _, s := range doc.Skipped {
		if strings.HasPrefix(s.Reason, "failed") {
			t.Errorf("%s %s %d: %s", s.System, s.Workload, s.Size, s.Reason)
		}
	}
	checkTable(t, out.String(), "### Ping-pong (rr), 64 B messages", "| sdx-adaptive | ", "| xsk-floor | ", "×1.00", "### Targets, from this run's medians", "### Idle connection", "### net/http (http)", "| sdx-conn-2p | ",
		"(the most one raw frame carries at MTU 1500)", "| sdx-conn | MTU 1500: bulk, 1 connection ≥ 0.8 × xsk-floor bulk | ×")
	f, err := os.Open(o.plotFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("plot: %v", err)
	}
}

// checkResult checks that a result's figures are there, positive and
// consistent.
func checkResult(t *testing.T, key string, r Result) {
	t.Helper()
	perMsg := r.CPUPerMsg > 0 || (r.Workload == string(bench.Idle) && r.CPUPerMsg == 0)
	if r.Repeats != 2 || r.Rate <= 0 || !perMsg || r.Unit != bench.UnitOf(bench.Workload(r.Workload)) {
		t.Errorf("%s: repeats %d rate %v %s cpu %v", key, r.Repeats, r.Rate, r.Unit, r.CPUPerMsg)
	}
	if r.Workload == string(bench.RR) || r.Workload == string(bench.HTTP) {
		if !(r.P50 > 0 && r.P50 <= r.P99 && r.P99 <= r.P999 && r.P999 <= r.Max) {
			t.Errorf("%s: percentiles p50 %v p99 %v p99.9 %v max %v", key, r.P50, r.P99, r.P999, r.Max)
		}
	} else if r.P50 != 0 || r.Max != 0 {
		t.Errorf("%s: latency figures on a %s result", key, r.Workload)
	}
	for f, sp := range r.Spread {
		v := r.figure(f)
		if !(sp[0] <= v && v <= sp[1]) {
			t.Errorf("%s: %s %v outside its spread %v", key, f, v, sp)
		}
	}
}

// TestRunMTU9000 runs the floor and the provider at MTU 9000: the floor's
// message is the 8972 bytes of the MTU (a multi-buffer packet), its bulk and its
// message rate at that size are there, the 16 KiB ping-pong is skipped
// with its reason, and the bulk target of MTU 9000 is judged, not the one
// of 1500.
func TestRunMTU9000(t *testing.T) {
	privileged(t)
	testutil.CheckFDs(t)
	_, rep := tinyRun(t, "-mtu", "9000", "-repeat", "1", "-systems", "xsk-floor,sdx-adaptive", "-workloads", "rr,msgrate,bulk")
	if rep.Env.MTU != 9000 {
		t.Errorf("env MTU %d, want 9000", rep.Env.MTU)
	}
	size := bench.FrameMessage(9000)
	for _, spec := range []bench.Spec{
		{Workload: bench.RR, Size: 1024, Conns: 1},
		{Workload: bench.MsgRate, Size: 64, Conns: 1},
		{Workload: bench.MsgRate, Size: size, Conns: 1},
		{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 1},
	} {
		for _, sys := range []string{"xsk-floor", "sdx-adaptive"} {
			r := rep.find(sys, spec)
			if r == nil {
				t.Errorf("%s %s: no result", sys, spec)
				continue
			}
			if r.Rate <= 0 || r.CPUPerMsg <= 0 || r.Loss < 0 || r.Loss >= 1 {
				t.Errorf("%s %s: rate %v cpu %v loss %v", sys, spec, r.Rate, r.CPUPerMsg, r.Loss)
			}
		}
	}
	// The floor's 16 KiB message is two frames of at most size bytes.
	rr16k := bench.Spec{Workload: bench.RR, Size: 16384, Conns: 1}
	if r := rep.find("xsk-floor", rr16k); r == nil || r.P50 <= 0 || r.Rate <= 0 {
		t.Errorf("xsk-floor 16 KiB rr in frames of at most %d B: %+v (skipped: %+v)", size, r, rep.skipped("xsk-floor", rr16k))
	}
	if sk := rep.skipped("xsk-floor", bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 4}); sk == nil {
		t.Error("xsk-floor bulk over 4 connections: not skipped")
	}
	for _, s := range rep.Skipped {
		if strings.HasPrefix(s.Reason, "failed") {
			t.Errorf("%s %s %d: %s", s.System, s.Workload, s.Size, s.Reason)
		}
	}
	table := markdown(t, rep)
	checkTable(t, table,
		"veth MTU 9000",
		fmt.Sprintf("### One-way message rate (msgrate), %d B messages (the most one raw frame carries at MTU 9000)", size),
		"| sdx-adaptive | MTU 9000: bulk, 1 connection ≥ 0.8 × xsk-floor bulk | ×",
	)
	if strings.Contains(table, "MTU 1500: bulk") {
		t.Errorf("the MTU 1500 target judged at MTU 9000:\n%s", table)
	}
}

// TestInterrupted cancels a run part way: it stops early with the
// cancellation and removes its testbed.
func TestInterrupted(t *testing.T) {
	privileged(t)
	before := testutil.OwnNamespaces(t)
	o, err := parseFlags([]string{"-systems", "tcp-spin,xsk-floor", "-workloads", "rr"})
	if err != nil {
		t.Fatal(err)
	}
	long := tinyBudget
	long.Limit, long.Transactions = 10*time.Second, 1<<30
	o.budget = &long
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = run(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("interrupted run: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("interrupted run took %v", el)
	}
	noNamespacesLeft(t, before)
}

// tinyRun runs sdxbench with args on the tiny budget, and checks that it
// removed every namespace it made.
func tinyRun(t *testing.T, args ...string) (*options, *Report) {
	t.Helper()
	before := testutil.OwnNamespaces(t)
	o, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	o.budget = &tinyBudget
	rep, err := run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	noNamespacesLeft(t, before)
	return o, rep
}

// noNamespacesLeft fails t if the process's namespaces are not those of
// before.
func noNamespacesLeft(t *testing.T, before string) {
	t.Helper()
	if after := testutil.OwnNamespaces(t); after != before {
		t.Fatalf("namespaces left behind: before %q, after %q", before, after)
	}
}

// TestCount runs -count over a floor in one process and a system in two:
// every result has each event per message, or says why not; what is
// counted is plausible (system calls and CPU time on every message), and
// the table shows it.
func TestCount(t *testing.T) {
	privileged(t)
	testutil.CheckFDs(t)
	o, rep := tinyRun(t, "-count", "-repeat", "1", "-systems", "xsk-floor-park,tcp-gonet-2p", "-workloads", "rr,msgrate,idle")
	if !o.count {
		t.Fatal("-count not set")
	}
	if len(rep.Results) == 0 {
		t.Fatal("no results")
	}
	for _, r := range rep.Results {
		key := fmt.Sprintf("%s %s %d", r.System, r.Workload, r.Size)
		if r.Counts == nil || r.CountsPer != bench.PerUnit(bench.Workload(r.Workload)) {
			t.Errorf("%s: counts %v per %q", key, r.Counts, r.CountsPer)
			continue
		}
		for _, name := range bench.CountNames {
			v, counted := r.Counts[name]
			why, missing := r.CountsMissing[name]
			if counted == missing || (missing && why == "") || v < 0 {
				t.Errorf("%s: %s counted %v (%v), missing %v (%q)", key, name, counted, v, missing, why)
			}
		}
		if v, ok := r.Counts["syscalls"]; ok && r.Workload != string(bench.Idle) && v <= 0 {
			t.Errorf("%s: %v system calls per message", key, v)
		}
		if v, ok := r.Counts["cpu_ns"]; ok && r.Workload != string(bench.Idle) && v <= 0 {
			t.Errorf("%s: %v ns of CPU per message", key, v)
		}
	}
	var out bytes.Buffer
	if err := writeOutputs(&out, rep, o); err != nil {
		t.Fatal(err)
	}
	checkTable(t, out.String(), "### Counts per message (-count)", "| xsk-floor-park | rr 64 B | transaction |", "| tcp-gonet-2p | msgrate 64 B | message |")
}
