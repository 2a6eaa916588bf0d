package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sdx-project/sdx/internal/control"
)

// statConfig is what `sdx stat` was asked.
type statConfig struct {
	sub    string // "" (stacks), "conns", "counters"
	json   bool
	detail bool          // -i
	watch  time.Duration // -w; 0: once
	pid    int           // 0: every process
	dir    string
}

func parseStat(args []string) (statConfig, error) {
	var c statConfig
	fs := flag.NewFlagSet("stat", flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", false, "print the stacks' JSON replies instead of the tables")
	fs.BoolVar(&c.detail, "i", false, "conns: each connection's figures (rtt, retransmits, windows, timers, ...)")
	watch := fs.Float64("w", 0, "every `SECONDS`, print again (counters: what changed since the last time)")
	fs.IntVar(&c.pid, "p", 0, "only the stacks of process `PID`")
	fs.StringVar(&c.dir, "dir", control.DefaultDir, "where stacks put their control sockets")
	fs.Usage = func() { fmt.Fprint(fs.Output(), statUsage) }
	// The subcommand may come before or after the flags.
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.sub, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.sub == "" && fs.NArg() > 0 {
		c.sub = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return c, err
		}
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("stat: unexpected %q", fs.Args())
	}
	switch c.sub {
	case "", "stacks":
		c.sub = control.CmdStack
	case "conns", "ss":
		c.sub = control.CmdConns
	case "counters":
		c.sub = control.CmdCounters
	default:
		return c, fmt.Errorf("stat: unknown subcommand %q (stacks, conns, ss, counters)", c.sub)
	}
	if *watch < 0 || math.IsNaN(*watch) || *watch > 86400 {
		return c, fmt.Errorf("stat: -w %v: use 0 to 86400 seconds", *watch)
	}
	c.watch = time.Duration(*watch * float64(time.Second))
	return c, nil
}

const statUsage = `usage: sdx stat [stacks|conns|ss|counters] [-json] [-i] [-w SECONDS] [-p PID] [-dir DIR]

Reads every sdx stack of the running processes on this host, in any
network namespace, through their control sockets (DIR/<pid>-<n>.sock,
root or the process's own user only).

  stat           one block per stack: interface, namespace, address,
                 queues, XDP mode, copy or zero-copy and why, connections,
                 fallbacks to kernel TCP by reason
  stat conns     one row per connection: state, local, peer, path (sdx or
  (ss)           tcp), Recv-Q, Send-Q, and why a tcp one fell back;
                 -i adds each connection's figures
  stat counters  each stack's counters, XDP_STATISTICS per queue included

-json prints the replies (the tables are made from the same JSON);
-w SECONDS prints again every SECONDS until interrupted.
`

// stat runs `sdx stat`, writing to w.
func stat(ctx context.Context, w io.Writer, c statConfig) error {
	var prev []flat
	for {
		replies, errs := gather(c)
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, "sdx:", err)
		}
		if c.watch > 0 && !c.json {
			fmt.Fprintf(w, "--- %s\n", time.Now().Format(time.TimeOnly))
		}
		switch {
		case c.json:
			b, err := json.Marshal(replies)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s\n", b)
		case c.sub == control.CmdStack:
			printStacks(w, replies)
		case c.sub == control.CmdConns:
			printConns(w, replies, c.detail)
		case c.sub == control.CmdCounters:
			prev = printCounters(w, replies, prev, c.watch > 0)
		}
		if c.watch == 0 {
			if len(replies) == 0 && len(errs) > 0 {
				return errors.New("no stack answered")
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.watch):
		}
	}
}

// gather asks every stack's control socket.
func gather(c statConfig) ([]control.Reply, []error) {
	replies := []control.Reply{}
	var errs []error
	for _, p := range control.Sockets(c.dir, c.pid) {
		r, err := control.Query(p, c.sub)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		replies = append(replies, *r)
	}
	return replies, errs
}

func stackName(s *control.Stack) string {
	name := strings.TrimSuffix(s.Socket[strings.LastIndexByte(s.Socket, '/')+1:], ".sock")
	return "stack " + name
}

func printStacks(w io.Writer, rs []control.Reply) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "no sdx stack is running")
	}
	for _, r := range rs {
		s := r.Stack
		ns := s.Netns
		if ns == "" {
			ns = "(the process's)"
		}
		iface := s.Interface
		if iface == "" {
			iface = "(a provider.Link)"
		}
		fmt.Fprintf(w, "%s: pid %d, netns %s, interface %s, %v in %v, UDP port %d, MTU %d\n",
			stackName(s), s.PID, ns, iface, s.Addr, s.Prefix, s.Port, s.MTU)
		xdp := "no XDP"
		if s.XDPMode != "" {
			xdp = "XDP " + s.XDPMode
			if s.XDPFrags {
				xdp += " (frags-aware)"
			}
			if s.XDPFallback != "" {
				xdp += " (" + s.XDPFallback + ")"
			}
		}
		mb := ""
		if s.MultiBuffer {
			mb = ", multi-buffer"
		}
		pollers := ""
		if s.Pollers > 1 {
			pollers = fmt.Sprintf(", %d pollers", s.Pollers)
		}
		fmt.Fprintf(w, "  %s%s, polling %s%s\n", xdp, mb, s.PollMode, pollers)
		for _, q := range s.Queues {
			why := ""
			if q.ZeroCopyRefused != "" {
				why = " (zero-copy refused: " + q.ZeroCopyRefused + ")"
			}
			fmt.Fprintf(w, "  queue %d: %s%s\n", q.ID, q.Mode, why)
		}
		fmt.Fprintf(w, "  connections: %d sdx, %d kernel TCP; listeners: %d\n", s.Conns, s.TCPConns, s.Listeners)
		fmt.Fprintf(w, "  fallbacks to kernel TCP: %s\n", fallbackList(s.Fallbacks))
	}
}

// fallbackList lists the reasons that happened, most first.
func fallbackList(m map[string]uint64) string {
	type kv struct {
		k string
		v uint64
	}
	var l []kv
	for k, v := range m {
		if v > 0 {
			l = append(l, kv{k, v})
		}
	}
	if len(l) == 0 {
		return "none"
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	var b strings.Builder
	for i, x := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", x.k, x.v)
	}
	return b.String()
}

func printConns(w io.Writer, rs []control.Reply, detail bool) {
	var table bytes.Buffer
	var details []string
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STACK\tSTATE\tLOCAL\tPEER\tPATH\tRECV-Q\tSEND-Q\tFALLBACK")
	details = append(details, "")
	for _, r := range rs {
		name := strings.TrimPrefix(stackName(r.Stack), "stack ")
		for _, c := range r.Conns {
			peer, fb := "*", c.Fallback
			if c.Peer.IsValid() {
				peer = c.Peer.String()
			}
			if fb == "" {
				fb = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%d\t%d\t%s\n", name, c.State, c.Local, peer, c.Path, c.RecvQ, c.SendQ, fb)
			details = append(details, connDetail(&c))
		}
	}
	tw.Flush()
	// The figures go under their row, outside the table's columns.
	for i, line := range strings.SplitAfter(strings.TrimSuffix(table.String(), "\n"), "\n") {
		io.WriteString(w, strings.TrimSuffix(line, "\n")+"\n")
		if detail && i < len(details) && details[i] != "" {
			io.WriteString(w, details[i])
		}
	}
}

// dur prints a duration with three significant digits or so; "-" for
// none.
func dur(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(100 * time.Nanosecond).String()
}

func connDetail(c *control.Conn) string {
	switch {
	case c.SDX != nil && c.SDX.Peer.IsValid():
		s := c.SDX
		cw := "cwnd -"
		if s.Cwnd > 0 {
			cw = fmt.Sprintf("cwnd %d ssthresh %d", s.Cwnd, s.Ssthresh)
		}
		return fmt.Sprintf("    id %d  mss %d  rtt %s/%s  minrtt %s  rto %s\n"+
			"    retrans %d (fast marks %d, timer expiries %d)  bytes sent %d acked %d received %d  segs out %d in %d\n"+
			"    in-flight %d  window peer %d own %d  limited by %s  %s\n"+
			"    ages: send %s recv %s ack %s  timers: rto %s ack %s keepalive %s\n",
			s.ID, s.MSS, dur(s.RTT), dur(s.RTTVar), dur(s.MinRTT), dur(s.RTO),
			s.Retransmits, s.FastRetransmits, s.RTOExpiries, s.BytesSent, s.BytesAcked, s.BytesReceived, s.SegsOut, s.SegsIn,
			s.InFlight, s.PeerWindow, s.OwnWindow, s.Limit, cw,
			dur(s.LastSend), dur(s.LastRecv), dur(s.LastAck), dur(s.RTOTimer), dur(s.AckTimer), dur(s.KeepaliveTimer))
	case c.SDX != nil:
		return fmt.Sprintf("    id %d\n", c.SDX.ID)
	case c.TCP != nil:
		t := c.TCP
		return fmt.Sprintf("    kernel: rtt %dus/%dus  retrans %d  bytes acked %d received %d\n", t.RTTMicros, t.RTTVarMicros, t.Retransmits, t.BytesAcked, t.BytesRecv)
	}
	return ""
}

// flat is one stack's counters, flattened from its JSON: name -> value.
type flat struct {
	name   string
	keys   []string
	values map[string]float64
}

func flatten(prefix string, v any, f *flat) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			flatten(join(prefix, k), x[k], f)
		}
	case []any:
		for i, e := range x {
			// A queue is named by its id, not its place in the list.
			name := fmt.Sprint(i)
			if m, ok := e.(map[string]any); ok {
				if id, ok := m["ID"].(float64); ok {
					name = fmt.Sprintf("q%d", int(id))
				}
			}
			flatten(join(prefix, name), e, f)
		}
	case float64:
		f.keys = append(f.keys, prefix)
		f.values[prefix] = x
	case bool:
		b := 0.0
		if x {
			b = 1
		}
		f.keys = append(f.keys, prefix)
		f.values[prefix] = b
	}
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// printCounters prints each stack's counters, flattened from their JSON;
// with prev (a watch), what changed since.
func printCounters(w io.Writer, rs []control.Reply, prev []flat, deltas bool) []flat {
	var now []flat
	for _, r := range rs {
		b, _ := json.Marshal(r.Counters)
		var v any
		json.Unmarshal(b, &v)
		f := flat{name: stackName(r.Stack), values: map[string]float64{}}
		flatten("", v, &f)
		now = append(now, f)
		var old *flat
		for i := range prev {
			if prev[i].name == f.name {
				old = &prev[i]
			}
		}
		fmt.Fprintf(w, "%s (%s %s)\n", f.name, r.Stack.Interface, r.Stack.Addr)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range f.keys {
			x := f.values[k]
			switch {
			case deltas && old != nil:
				d := x - old.values[k]
				if d == 0 {
					continue
				}
				fmt.Fprintf(tw, "  %s\t%14.0f\t%+14.0f\n", k, x, d)
			case x != 0 || !deltas:
				fmt.Fprintf(tw, "  %s\t%14.0f\n", k, x)
			}
		}
		tw.Flush()
	}
	if len(rs) == 0 {
		fmt.Fprintln(w, "no sdx stack is running")
	}
	return now
}
