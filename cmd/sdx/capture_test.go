package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/control"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// pcapFrames reads a pcap file's records: each frame's bytes.
func pcapFrames(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil || len(b) < 24 {
		return nil
	}
	if binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != 1 {
		t.Fatalf("%s: not a pcap of Ethernet frames: % x", name, b[:24])
	}
	var out [][]byte
	for b = b[24:]; len(b) >= 16; {
		n := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) < 16+n {
			break // being written
		}
		out = append(out, b[16:16+n])
		b = b[16+n:]
	}
	return out
}

// TestCapture: `sdx capture` of a stack (this process's, on host A)
// during an echo over sdx has exactly the frames the stack's link
// counted, in both directions, and the Wireshark dissector decodes every
// one of them as sdx, with nothing malformed.
func TestCapture(t *testing.T) {
	testutil.Privileged(t)
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		testutil.SkipOrFail(t, "needs tshark (scripts/install-deps.sh installs it)")
	}
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{})
	var st [2]*sdx.Stack
	for i, h := range []*testbed.Host{&bed.A, &bed.B} {
		if st[i], err = sdx.NewStack(sdx.Config{Netns: h.NS, Interface: h.If, Queues: []int{0}, CloseTimeout: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		defer st[i].Close()
	}
	a, b := st[0], st[1]
	ln, err := (&sdx.ListenConfig{Stack: b, DisableFallback: true}).Listen(context.Background(), "tcp", netip.AddrPortFrom(bed.B.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go testutil.ServeAll(ln, testutil.Echo)

	// Nothing is connected yet, so neither stack sends a frame.
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "echo.pcap")
	var stderr bytes.Buffer
	cli := sdxCmd(bin, "capture", "-p", strconv.Itoa(os.Getpid()), "-i", bed.A.If, "-w", file)
	cli.Stderr = &stderr
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cli.Process.Kill()
		cli.Wait()
	}()
	waitUntil(t, "the capture to start", func() bool {
		r, err := control.Query(a.ControlPath(), control.CmdStack)
		return err == nil && r.Stack.Capturing
	})
	q0 := a.LinkStats().Queues[0]

	c, err := (&sdx.Dialer{Stack: a, DisableFallback: true}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("sdx capture "), 8000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %v", err)
	}
	c.Close()
	// The graceful close runs on; wait until both stacks are done with the
	// connection and A's link counts no more frames.
	var q1 = q0
	waitUntil(t, "the link to go quiet", func() bool {
		s := a.Provider().Stats()
		prev := q1
		q1 = a.LinkStats().Queues[0]
		return s.Endpoints == 0 && b.Provider().Stats().Endpoints == 1 && q1.RxFrames == prev.RxFrames && q1.TxFrames == prev.TxFrames && q1.RxFrames > q0.RxFrames
	})
	rx, tx := int(q1.RxFrames-q0.RxFrames), int(q1.TxFrames-q0.TxFrames)
	waitUntil(t, "the capture to hold every frame", func() bool { return len(pcapFrames(t, file)) >= rx+tx })
	time.Sleep(50 * time.Millisecond) // room for a frame too many to show up
	cli.Process.Signal(os.Interrupt)
	if err := cli.Wait(); err != nil {
		t.Fatalf("sdx capture: %v: %s", err, stderr.String())
	}
	frames := pcapFrames(t, file)
	var sent, recvd int
	for _, f := range frames {
		if len(f) < 34 {
			t.Fatalf("a frame of %d bytes", len(f))
		}
		switch src, dst := netip.AddrFrom4([4]byte(f[26:30])), netip.AddrFrom4([4]byte(f[30:34])); {
		case src == bed.A.Addr && dst == bed.B.Addr:
			sent++
		case src == bed.B.Addr && dst == bed.A.Addr:
			recvd++
		default:
			t.Errorf("a frame from %v to %v", src, dst)
		}
	}
	if sent != tx || recvd != rx {
		t.Fatalf("the capture holds %d frames sent and %d received; the link counted %d and %d", sent, recvd, tx, rx)
	}
	if want := "recorded " + strconv.Itoa(len(frames)) + " and dropped 0"; !strings.Contains(stderr.String(), want) {
		t.Errorf("sdx capture says: %s", stderr.String())
	}
	t.Logf("%d frames sent, %d received; %s", sent, recvd, strings.TrimSpace(stderr.String()))

	// The dissector decodes each frame as sdx, and nothing is malformed.
	lua, err := filepath.Abs("../../tools/wireshark/sdx.lua")
	if err != nil {
		t.Fatal(err)
	}
	var tsErr bytes.Buffer
	ts := exec.Command(tshark, "-n", "-r", file, "-X", "lua_script:"+lua,
		"-T", "fields", "-E", "separator=,", "-e", "frame.number", "-e", "sdx.opcode", "-e", "sdx.len", "-e", "_ws.expert.message")
	ts.Stderr = &tsErr
	out, err := ts.Output()
	if err != nil || strings.Contains(tsErr.String(), "sdx.lua") {
		t.Fatalf("tshark: %v: %s", err, tsErr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(frames) {
		t.Fatalf("tshark printed %d lines for %d frames: %s", len(lines), len(frames), out)
	}
	ops := map[string]int{}
	payload := 0
	for _, l := range lines {
		fs := strings.Split(l, ",")
		if len(fs) < 4 || fs[1] == "" || fs[3] != "" {
			t.Errorf("frame not decoded as sdx, or flagged: %q", l)
			continue
		}
		ops[fs[1]]++
		if fs[1] == "4" { // data
			n, _ := strconv.Atoi(fs[2])
			payload += n
		}
	}
	// Data frames both ways, retransmissions included: at least the
	// message out and back.
	if ops["1"] != 1 || ops["2"] != 1 || ops["8"] != 2 || payload < 2*len(msg) {
		t.Errorf("opcodes %v, data payload %d: want one connect, one accept, two disconnects, %d bytes of data", ops, payload, 2*len(msg))
	}
	t.Logf("opcodes (tshark): %v", ops)
}

// waitUntil polls cond for up to 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
