package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/sdx-project/sdx/internal/control"
)

// captureConfig is what `sdx capture` was asked.
type captureConfig struct {
	pid     int
	iface   string
	file    string // "-": standard output
	snaplen int
	count   int // stop after so many frames; 0: when interrupted
	dir     string
}

const captureUsage = `usage: sdx capture -p PID [-i IFACE] -w FILE.pcap|- [-s SNAPLEN] [-c COUNT] [-dir DIR]

Records the frames the sdx stack of process PID sends and receives, both
directions, as a pcap file (Ethernet), until interrupted or COUNT frames;
-w - writes to standard output (sdx capture -p PID -w - | tcpdump -r -).
-i picks the stack by interface when the process has several. The stack
keeps the frames in a ring while they wait to be written, and counts
those it had to drop; sdx capture prints both counts at the end.
tools/wireshark/sdx.lua dissects the sdx header.
`

func parseCapture(args []string) (captureConfig, error) {
	var c captureConfig
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.IntVar(&c.pid, "p", 0, "the process whose stack to capture")
	fs.StringVar(&c.iface, "i", "", "the stack's interface, when the process has several stacks")
	fs.StringVar(&c.file, "w", "", "write the pcap to `FILE` (- for standard output)")
	fs.IntVar(&c.snaplen, "s", 0, "keep at most `SNAPLEN` bytes of each frame (default 65535)")
	fs.IntVar(&c.count, "c", 0, "stop after `COUNT` frames")
	fs.StringVar(&c.dir, "dir", control.DefaultDir, "where stacks put their control sockets")
	fs.Usage = func() { fmt.Fprint(fs.Output(), captureUsage) }
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("capture: unexpected %q", fs.Args())
	case c.pid <= 0:
		return c, errors.New("capture: -p PID is required")
	case c.file == "":
		return c, errors.New("capture: -w FILE is required (- for standard output)")
	case c.snaplen < 0 || c.snaplen > 262144 || c.count < 0:
		return c, errors.New("capture: -s takes 0..262144, -c a count")
	}
	return c, nil
}

// capture runs `sdx capture`; it reports to msg.
func capture(ctx context.Context, c captureConfig, msg io.Writer) error {
	path, err := pickStack(c)
	if err != nil {
		return err
	}
	rc, err := control.Capture(path, c.snaplen)
	if err != nil {
		return err
	}
	// The counts are asked for before the stream closes: the capture ends
	// with it. An interrupt asks, then closes, which ends the copy below.
	var (
		once   sync.Once
		counts *control.Reply
		qerr   error
	)
	finish := func() {
		once.Do(func() {
			counts, qerr = control.Query(path, control.CmdStack)
			rc.Close()
		})
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		finish()
		close(interrupted)
	})
	var out io.Writer = os.Stdout
	if c.file != "-" {
		f, err := os.Create(c.file)
		if err != nil {
			stop()
			rc.Close()
			return err
		}
		defer f.Close()
		out = f
	}
	bw := bufio.NewWriter(out)
	n, copyErr := copyPcap(bw, rc, c.count)
	if err := bw.Flush(); err != nil && copyErr == nil {
		copyErr = err
	}
	if !stop() {
		<-interrupted
	}
	finish()
	if qerr == nil {
		fmt.Fprintf(msg, "sdx capture: %d frames written; the stack recorded %d and dropped %d for want of room in its ring\n",
			n, counts.Stack.CaptureFrames, counts.Stack.CaptureDropped)
	} else {
		fmt.Fprintf(msg, "sdx capture: %d frames written\n", n)
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal end
	}
	return copyErr
}

// pickStack finds the control socket of c's process and interface.
func pickStack(c captureConfig) (string, error) {
	socks := control.Sockets(c.dir, c.pid)
	var found []string
	for _, p := range socks {
		r, err := control.Query(p, control.CmdStack)
		if err != nil {
			return "", err
		}
		if c.iface == "" || r.Stack.Interface == c.iface {
			found = append(found, p)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0:
		return "", fmt.Errorf("capture: process %d has no sdx stack%s", c.pid, map[bool]string{true: " on " + c.iface}[c.iface != ""])
	}
	return "", fmt.Errorf("capture: process %d has %d stacks: pick one with -i", c.pid, len(found))
}

// copyPcap copies a pcap stream record by record, up to count records
// (0: all), and returns how many it copied.
func copyPcap(w io.Writer, r io.Reader, count int) (int, error) {
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, fmt.Errorf("capture: pcap header: %w", err)
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return 0, err
	}
	buf := make([]byte, 262144)
	n := 0
	for count == 0 || n < count {
		var rec [16]byte
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		caplen := binary.LittleEndian.Uint32(rec[8:])
		if caplen > uint32(len(buf)) {
			return n, fmt.Errorf("capture: a record of %d bytes", caplen)
		}
		if _, err := io.ReadFull(r, buf[:caplen]); err != nil {
			return n, err
		}
		w.Write(rec[:])
		if _, err := w.Write(buf[:caplen]); err != nil {
			return n, err
		}
		n++
		// Out as soon as nothing more waits: a reader of the file (or
		// of tcpdump -r -) sees frames as they come.
		if br, ok := r.(interface{ Buffered() int }); ok && br.Buffered() == 0 {
			if f, ok := w.(interface{ Flush() error }); ok {
				if err := f.Flush(); err != nil {
					return n, err
				}
			}
		}
	}
	return n, nil
}
