package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sdx-project/sdx/bench"
	"github.com/sdx-project/sdx/xdp"
)

// Env is the machine and setup a report was measured on.
type Env struct {
	Kernel     string `json:"kernel"`
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	Go         string `json:"go"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Pinning    string `json:"pinning"`
	XDPMode    string `json:"xdp_mode"` // native or generic, as granted to the floor's steer program
	XSKMode    string `json:"xsk_mode"` // copy or zero-copy, as granted to the floor's AF_XDP sockets
	// XDPFallback says why XDP is not frags-aware native mode (the
	// attempts the kernel refused); empty when it is.
	XDPFallback string `json:"xdp_fallback,omitempty"`
	MTU         int    `json:"veth_mtu"`
	Queues      int    `json:"veth_queues"` // rx queues of A's interface, every one served by the sdx stacks
	Testbed     string `json:"testbed"`
	Date        string `json:"date"`
	Command     string `json:"command"`
	Commit      string `json:"commit"` // the module's VCS revision, "+dirty" with local changes
	Repeats     int    `json:"repeats"`
	Quick       bool   `json:"quick"`
	Budget      string `json:"budget"`
	// The load average before and after the run: other work on the
	// machine shows up in the tails.
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
	// Over the whole run, in % of all CPUs: how busy the machine was, and
	// how much of that was this process. The difference is other work.
	MachineBusy float64 `json:"machine_busy_pct"`
	ProcessBusy float64 `json:"process_busy_pct"`

	start cpuSnapshot
}

// cpuSnapshot is the machine's and the process's CPU time at one instant.
type cpuSnapshot struct {
	at          time.Time
	busy, total float64 // machine, in clock ticks, from /proc/stat
	self        float64 // process user+system, in seconds
}

func takeCPU() cpuSnapshot {
	s := cpuSnapshot{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i, v := range f[1:] {
			var n float64
			fmt.Sscan(v, &n)
			s.total += n
			if i != 3 && i != 4 { // idle, iowait
				s.busy += n
			}
		}
	}
	if d, err := bench.ProcessCPU(); err == nil {
		s.self = d.Seconds()
	}
	return s
}

// finish fills in what is known only at the end of the run.
func (e *Env) finish() {
	end := takeCPU()
	e.LoadAfter = loadAverage()
	if dt := end.total - e.start.total; dt > 0 {
		e.MachineBusy = 100 * (end.busy - e.start.busy) / dt
	}
	if wall := end.at.Sub(e.start.at).Seconds(); wall > 0 && e.CPUs > 0 {
		e.ProcessBusy = 100 * (end.self - e.start.self) / (wall * float64(e.CPUs))
	}
}

func collectEnv(h *bench.Hosts, o *options, built string, bud bench.Budget) Env {
	e := Env{
		Kernel:     kernel(),
		Arch:       runtime.GOARCH,
		CPUs:       runtime.NumCPU(),
		CPUModel:   cpuModel(),
		Go:         runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Pinning: fmt.Sprintf("spinning threads only (LockOSThread + sched_setaffinity): client CPU %d, server CPU %d "+
			"(tcp-spin, udp-spin, xsk-floor, and sdx-busy and sdx-adaptive, whose blocked verbs poll); tcp-gonet, the sdx-conn systems, xsk-floor-park, the two-process systems and the providers' dedicated pollers unpinned; "+
			"the process is not pinned", h.ClientCPU, h.ServerCPU),
		XDPMode: "not measured",
		XSKMode: "not measured",
		Testbed: fmt.Sprintf("%s: %s/%s %v <-> %s/%s %v", built, h.A.NS, h.A.If, h.A.Addr, h.B.NS, h.B.If, h.B.Addr),
		Date:    time.Now().UTC().Format(time.RFC3339),
		Command: o.commandArg,
		Commit:  commit(),
		Repeats: o.repeat,
		Quick:   o.quick,
		Budget: fmt.Sprintf("each run: up to %v measured; rr %d transactions after %d warm-up, msgrate %d messages, bulk %d MiB, connrate %d connections",
			bud.Limit, bud.Transactions, bud.Warmup, bud.Messages, bud.Bytes>>20, bud.Conns),
		LoadBefore: loadAverage(),
		start:      takeCPU(),
	}
	e.MTU, _ = h.MTU()
	e.Queues, _ = xdp.RxQueues(h.A.NS, h.A.If)
	return e
}

func kernel() string {
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	ver, _ := os.ReadFile("/proc/sys/kernel/version")
	return strings.TrimSpace(strings.TrimSpace(string(rel)) + " " + strings.TrimSpace(string(ver)))
}

// buildCommit, when set with -ldflags "-X main.buildCommit=REV", is the
// revision the binary was built from.
var buildCommit string

// commit is the revision the binary was built from: buildCommit, or the
// VCS revision go build stamped, or failing both the one of the git work
// tree it runs in.
func commit() string {
	if buildCommit != "" {
		return buildCommit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", ""
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision":
				rev = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				dirty = "-dirty"
			}
		}
		if rev != "" {
			return rev + dirty
		}
	}
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func (e *Env) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "- kernel: %s (%s)\n", e.Kernel, e.Arch)
	fmt.Fprintf(b, "- CPUs: %d × %s, GOMAXPROCS %d\n", e.CPUs, e.CPUModel, e.GOMAXPROCS)
	fmt.Fprintf(b, "- Go: %s\n", e.Go)
	fmt.Fprintf(b, "- pinning: %s\n", e.Pinning)
	fmt.Fprintf(b, "- XDP: %s; AF_XDP: %s; veth MTU %d, %d queue(s)\n", e.XDPMode, e.XSKMode, e.MTU, e.Queues)
	if e.XDPFallback != "" {
		fmt.Fprintf(b, "- XDP fell back: %s\n", e.XDPFallback)
	}
	fmt.Fprintf(b, "- testbed: %s\n", e.Testbed)
	fmt.Fprintf(b, "- %s\n", e.Budget)
	fmt.Fprintf(b, "- load average (1, 5, 15 min): %s before, %s after; CPUs busy during the run: %.0f%%, of which this process %.0f%%\n",
		e.LoadBefore, e.LoadAfter, e.MachineBusy, e.ProcessBusy)
	fmt.Fprintf(b, "- date: %s; commit %s; command: `%s`\n", e.Date, e.Commit, e.Command)
}
