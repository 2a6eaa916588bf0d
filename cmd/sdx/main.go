// Command sdx is the sdx command-line tool.
//
//	sdx demo [-frames N] [-size BYTES] [-queues N] [-mtu BYTES] [-timeout D]
//	sdx stat [stacks|conns|ss|counters] [-json] [-i] [-w SECONDS] [-p PID]
//	sdx capture -p PID [-i IFACE] -w FILE.pcap|- [-s SNAPLEN] [-c COUNT]
//
// demo builds a throw-away testbed (two network namespaces joined by a veth
// pair, addresses in 198.18.0.0/15), attaches the steer program to both
// ends, opens an AF_XDP queue on each, sends frames from A to B and has B
// echo each one back, prints the counters of every layer, and removes the
// testbed, also when interrupted. It sends nothing anywhere else.
//
// It needs root (or CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN) and Linux 5.9
// or later (AF_XDP with need_wakeup, XDP attached through bpf_link).
//
// stat reads the sdx stacks of running processes through their control
// sockets (/run/sdx/<pid>-<n>.sock): stacks, connections (with -i each
// one's figures) or counters, as tables or JSON, once or every -w
// seconds. It needs root or the user the processes run as, nothing of
// the kernel beyond Unix sockets.
//
// capture records the frames a process's stack sends and receives into a
// pcap file, or to standard output for tcpdump -r -, through the same
// control socket; tools/wireshark/sdx.lua dissects them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "demo":
		fs := flag.NewFlagSet("demo", flag.ExitOnError)
		frames := fs.Int("frames", 200000, "frames to send from A to B (each is echoed back)")
		size := fs.Int("size", 64, "frame payload bytes after the UDP header (16..MTU-28; above a UMEM frame, multi-buffer packets)")
		queues := fs.Int("queues", 1, "rx/tx queues of each veth end; frames go over all of them")
		mtu := fs.Int("mtu", 1500, "MTU of the veth pair (1280..65535)")
		timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
		fs.Parse(os.Args[2:])
		err = demo(ctx, demoConfig{frames: *frames, size: *size, queues: *queues, mtu: *mtu, timeout: *timeout})
	case "stat":
		c, perr := parseStat(os.Args[2:])
		if perr != nil {
			fmt.Fprintln(os.Stderr, "sdx:", perr)
			os.Exit(2)
		}
		err = stat(ctx, os.Stdout, c)
	case "ss":
		c, perr := parseStat(append([]string{"conns"}, os.Args[2:]...))
		if perr != nil {
			fmt.Fprintln(os.Stderr, "sdx:", perr)
			os.Exit(2)
		}
		err = stat(ctx, os.Stdout, c)
	case "capture":
		c, perr := parseCapture(os.Args[2:])
		if perr != nil {
			fmt.Fprintln(os.Stderr, "sdx:", perr)
			os.Exit(2)
		}
		err = capture(ctx, c, os.Stderr)
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "sdx: unknown command %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdx:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: sdx demo [-frames N] [-size BYTES] [-queues N] [-mtu BYTES] [-timeout D]
       sdx stat [stacks|conns|ss|counters] [-json] [-i] [-w SECONDS] [-p PID] [-dir DIR]
       sdx ss [-json] [-i] [-w SECONDS] [-p PID]   (sdx stat conns)
       sdx capture -p PID [-i IFACE] -w FILE.pcap|- [-s SNAPLEN] [-c COUNT]

demo: build a veth testbed, move frames over AF_XDP both ways, print the
counters, tear the testbed down. Needs root.
stat: look inside the sdx stacks of running processes (sdx stat -h).
capture: record a stack's frames as pcap (sdx capture -h).`)
	os.Exit(2)
}
