package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sdx-project/sdx/bench"
	"github.com/sdx-project/sdx/internal/testbed"
)

// incastOptions are the flags of -workload incast.
type incastOptions struct {
	senders int
	rate    int64 // bits per second
	buffer  int
	ecn     bool
	markK   int      // -mark-threshold
	mixes   []string // sdx, cubic, mixed
	pacing  bool
	minRTO  time.Duration
	reno    bool
}

// incastRuns are the runs of -workload incast: every sender on sdx, every
// sender on kernel TCP with cubic, and half and half (mixed).
func incastRuns(o *incastOptions) (names []string, kinds [][]string) {
	for _, m := range o.mixes {
		k := make([]string, o.senders)
		for i := range k {
			switch m {
			case "sdx":
				k[i] = bench.IncastSDX
			case "cubic":
				k[i] = bench.IncastCubic
			case "mixed":
				k[i] = []string{bench.IncastSDX, bench.IncastCubic}[i%2]
			}
		}
		names, kinds = append(names, m), append(kinds, k)
	}
	return names, kinds
}

// runIncast measures the incast runs o asks for and writes a table.
func runIncast(ctx context.Context, w io.Writer, o *options) error {
	inc := o.incast
	dur := o.limit
	if dur == 0 {
		dur = 5 * time.Second
		if o.quick {
			dur = time.Second
		}
	}
	port := "drop-tail"
	if inc.ecn {
		k := inc.markK
		if k == 0 {
			k = testbed.DefaultMarkThreshold(inc.buffer)
		}
		port = fmt.Sprintf("ECN-marking above %d B, kernel TCP with ECN", k)
	}
	fmt.Fprintf(w, "incast: %d senders -> 1 receiver through a %d Mbit/s port with a %d B buffer (%s), %v per run after 1 s of warm-up, %d repeat(s)\n\n",
		inc.senders, inc.rate/1e6, inc.buffer, port, dur, o.repeat)
	fmt.Fprintln(w, "| run | goodput | Jain | sdx share | cubic share | drops at the port | marked | sdx rtx | cubic rtx | CPU (2 cores) | CPU s/GB | ping p50 | ping p99 | longest stall | per-flow Mbit/s |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	names, kinds := incastRuns(inc)
	var notes []string
	defer func() {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}()
	for r := range o.repeat {
		for i, k := range kinds {
			res, err := bench.RunIncast(ctx, bench.Incast{Kinds: k, Rate: inc.rate, Buffer: inc.buffer, ECN: inc.ecn, MarkThreshold: inc.markK,
				Warmup: time.Second, Duration: dur, Subnet: uint8(100 + r%50), Pacing: inc.pacing, MinRTO: inc.minRTO, Reno: inc.reno})
			if err != nil {
				return fmt.Errorf("incast %s: %w", names[i], err)
			}
			var flows []string
			var stall time.Duration
			stalls := map[string]time.Duration{}
			for _, f := range res.Flows {
				flows = append(flows, fmt.Sprintf("%s %.0f", f.Kind, f.Mbps))
				stall = max(stall, f.MaxStall)
				stalls[f.Kind] = max(stalls[f.Kind], f.MaxStall)
			}
			frac := func(k string) string {
				if res.DataOut[k] == 0 {
					return "-"
				}
				return fmt.Sprintf("%.2f%%", 100*float64(res.Retrans[k])/float64(res.DataOut[k]))
			}
			note := fmt.Sprintf("%s: sdx bursts (1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+ segments) %v; sdx timer expiries %d, %d of them spurious and undone",
				names[i], res.Bursts, res.RTOs, res.SpuriousRTOs)
			if n := countKind(k, bench.IncastCubic); n > 0 && inc.ecn {
				note += fmt.Sprintf("; %d of %d kernel TCP streams agreed on ECN", res.TCPECN, n)
			}
			if len(stalls) > 1 {
				note += fmt.Sprintf("; longest stall of an sdx flow %v, of a cubic flow %v",
					stalls[bench.IncastSDX].Round(time.Millisecond), stalls[bench.IncastCubic].Round(time.Millisecond))
			}
			notes = append(notes, note)
			fmt.Fprintf(w, "| %s | %.2f | %.3f | %.2f | %.2f | %.2f%% (%d of %d) | %d | %s | %s | %.0f%% | %.2f | %v | %v | %v | %s |\n",
				names[i], res.Goodput, res.Jain, res.Share[bench.IncastSDX], res.Share[bench.IncastCubic],
				100*res.DropFrac, res.Dropped, res.Sent+res.Dropped, res.Marked, frac(bench.IncastSDX), frac(bench.IncastCubic),
				100*res.CPU, res.CPUPerGB, res.PingP50.Round(time.Microsecond), res.PingP99.Round(time.Microsecond),
				stall.Round(time.Millisecond), strings.Join(flows, ", "))
			if res.CC != "" && res.CC != "cubic" {
				return fmt.Errorf("incast: kernel TCP ran %q, not cubic", res.CC)
			}
		}
	}
	return nil
}

// countKind counts the senders of kind in kinds.
func countKind(kinds []string, kind string) int {
	n := 0
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}

// parseMixes checks -mix.
func parseMixes(s string) ([]string, error) {
	out := splitList(s)
	if len(out) == 0 {
		out = []string{"sdx", "cubic", "mixed"}
	}
	for _, m := range out {
		if !slices.Contains([]string{"sdx", "cubic", "mixed"}, m) {
			return nil, fmt.Errorf("-mix: unknown run %q (have sdx, cubic, mixed)", m)
		}
	}
	return out, nil
}
