package sdx

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testutil"
)

// Two-process tests run a peer in a child process: this test binary
// started again with childEnv set to what the child does, inside the
// other host's namespace. The child ends when its standard input closes.
const childEnv = "SDX_TEST_CHILD"

func TestMain(m *testing.M) { testutil.ChildMain(m, childEnv, runChild) }

// runChild is the child's main.
//   - "parkread NS IF ADDR PEER": a stack on IF in NS, one sdx connection
//     to PEER, "ready" on stdout, then a Read parked on it until the
//     parent closes the connection; it reports how the Read ended and
//     waits for stdin to close.
//   - "serve NS IF POLLERS": the dead-peer tests' server (serverChild).
func runChild(spec string) int {
	f := strings.Fields(spec)
	if len(f) == 4 && f[0] == "serve" {
		n, err := strconv.Atoi(f[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		return serverChild(f[1], f[2], n)
	}
	if len(f) != 5 || f[0] != "parkread" {
		fmt.Fprintf(os.Stderr, "%s=%q: want parkread NS IF ADDR PEER, or serve NS IF POLLERS\n", childEnv, spec)
		return 2
	}
	addr, err := netip.ParseAddr(f[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	st, err := NewStack(Config{Netns: f[1], Interface: f[2], Addr: addr, Queues: []int{0}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	c, err := (&Dialer{Stack: st, DisableFallback: true}).Dial("tcp", f[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	fmt.Println("ready")
	var b [1]byte
	_, err = c.Read(b[:])
	fmt.Printf("read: %v\n", err)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// A Read parked on a quiet connection costs no CPU when the peer is
// another process, as it costs none in one process
// (TestBlockedReadCostsNoCPU): the child parks a Read on its sdx
// connection, and its CPU time over the span is measured from here; so is
// this process's, with a Read of its own parked on the other end.
func TestParkedReadTwoProcesses(t *testing.T) {
	testutil.Privileged(t)
	bed := vethBed(t)
	st := vethStack(t, &bed.A)
	ln, err := (&ListenConfig{Stack: st, DisableFallback: true}).Listen(t.Context(), "tcp", netip.AddrPortFrom(bed.A.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	child := startChild(t, fmt.Sprintf("parkread %s %s %s %s", bed.B.NS, bed.B.If, bed.B.Addr, ln.Addr()))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	checkPath(t, c, PathSDX)
	if line, err := child.Out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	read := parkedRead(c, 1, 100*time.Millisecond) // both Reads have parked
	const span = time.Second
	self0, err := sys.ProcessCPU()
	if err != nil {
		t.Fatal(err)
	}
	peer0, err := sys.ProcCPU(child.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(span)
	self1, _ := sys.ProcessCPU()
	peer1, err := sys.ProcCPU(child.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-read; !errors.Is(err, net.ErrClosed) {
		t.Errorf("parked Read after Close: %v, want net.ErrClosed", err)
	}
	// The child's Read ends: the close is graceful, so end of stream.
	if line, err := child.Out.ReadString('\n'); err != nil || line != "read: EOF\n" {
		t.Errorf("the child's Read ended with %q, %v; want EOF", line, err)
	}
	for name, used := range map[string]time.Duration{"this process": self1 - self0, "the child": peer1 - peer0} {
		t.Logf("%s: CPU while a Read waited %v: %v (%.2f%% of a core)", name, span, used, 100*used.Seconds()/span.Seconds())
		if used > span/20 {
			t.Errorf("%s: a Read waiting on a quiet connection cost %v of CPU in %v: want under 5%% of a core", name, used, span)
		}
	}
}

// startChild starts the child that spec describes and ends it when the
// test ends, failing the test if it does not end when its input closes.
func startChild(t *testing.T, spec string) *testutil.Child {
	t.Helper()
	c := testutil.StartChild(t, childEnv+"="+spec)
	t.Cleanup(func() {
		if err := c.Stop(10 * time.Second); err != nil {
			t.Error(err)
		}
	})
	return c
}
