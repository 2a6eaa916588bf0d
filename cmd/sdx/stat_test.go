package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/control"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// The test binary plays two more parts, chosen by environment: the sdx
// command itself (envMain: its arguments follow "--"), and a process
// that holds sdx connections (envHolder).
const (
	envMain   = "SDX_TEST_MAIN"
	envHolder = "SDX_TEST_HOLDER" // netns,interface,peer address:port,connections[,bytes to write on each]
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(envMain) != "":
		i := slices.Index(os.Args, "--")
		os.Args = append([]string{"sdx"}, os.Args[i+1:]...)
		main()
		os.Exit(0)
	case os.Getenv(envHolder) != "":
		os.Exit(hold(os.Getenv(envHolder)))
	}
	os.Exit(m.Run())
}

// hold opens a stack, makes the connections, prints their local ports
// and holds them until its standard input closes.
func hold(spec string) int {
	f := strings.Split(spec, ",")
	k, _ := strconv.Atoi(f[3])
	var write int
	if len(f) > 4 {
		write, _ = strconv.Atoi(f[4])
	}
	st, err := sdx.NewStack(sdx.Config{Netns: f[0], Interface: f[1], Queues: []int{0}})
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	defer st.Close()
	d := sdx.Dialer{Stack: st, DisableFallback: true, Timeout: 5 * time.Second}
	var ports []string
	for range k {
		c, err := d.Dial("tcp", f[2])
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		defer c.Close()
		if _, err := c.Write(make([]byte, write)); err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		ports = append(ports, strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port))
	}
	fmt.Println("PORTS", strings.Join(ports, " "))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// sdxCmd runs this binary as the sdx command.
func sdxCmd(bin string, args ...string) *exec.Cmd {
	c := exec.Command(bin, append([]string{"-test.run=^$", "--"}, args...)...)
	c.Env = append(os.Environ(), envMain+"=1")
	return c
}

// statConns runs `sdx stat conns -json -p pid` and decodes its output.
func statConns(t *testing.T, bin string, pid int) []control.Reply {
	t.Helper()
	out, err := sdxCmd(bin, "stat", "conns", "-json", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		t.Fatalf("sdx stat conns: %v", err)
	}
	var rs []control.Reply
	if err := json.Unmarshal(out, &rs); err != nil {
		t.Fatalf("sdx stat conns -json: %v in %q", err, out)
	}
	return rs
}

// TestStatTwoProcesses: a child process holds K sdx connections over the
// veth testbed to a listener of this process; `sdx stat conns -json`
// (another process) sees exactly those K, with the child's own local
// ports, which are also the peers this side accepted. After the child is
// killed it sees none and the child's socket is gone. Another user id
// may not read the child's stack.
func TestStatTwoProcesses(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	const k = 5
	bed := testbed.New(t, testbed.Options{})
	srv, err := sdx.NewStack(sdx.Config{Netns: bed.B.NS, Interface: bed.B.If, Queues: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := (&sdx.ListenConfig{Stack: srv, DisableFallback: true}).Listen(context.Background(), "tcp", netip.AddrPortFrom(bed.B.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, k)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()

	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := testutil.StartChild(t, fmt.Sprintf("%s=%s,%s,%s,%d,%d", envHolder, bed.A.NS, bed.A.If, ln.Addr(), k, 1000))
	line, err := child.Out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "PORTS ") {
		t.Fatalf("child: %q, %v", line, err)
	}
	var want []uint16
	for _, f := range strings.Fields(line)[1:] {
		p, _ := strconv.Atoi(f)
		want = append(want, uint16(p))
	}
	var peers []uint16
	for range k {
		select {
		case c := <-accepted:
			defer c.Close()
			peers = append(peers, uint16(c.RemoteAddr().(*net.TCPAddr).Port))
		case <-time.After(5 * time.Second):
			t.Fatal("the child's connections were not accepted")
		}
	}
	slices.Sort(want)
	slices.Sort(peers)
	if !slices.Equal(want, peers) || len(want) != k {
		t.Fatalf("child's ports %v, accepted peers %v", want, peers)
	}

	pid := child.Cmd.Process.Pid
	rs := statConns(t, bin, pid)
	if len(rs) != 1 || rs[0].Stack == nil || rs[0].Stack.PID != pid {
		t.Fatalf("sdx stat conns -p %d: %d replies: %+v", pid, len(rs), rs)
	}
	sock := rs[0].Stack.Socket
	var got []uint16
	for _, c := range rs[0].Conns {
		if !c.Peer.IsValid() {
			t.Errorf("the child holds no listener, but stat lists %+v", c)
			continue
		}
		if c.Path != "sdx" || c.State != "Established" || c.Local.Addr() != bed.A.Addr || c.Peer != netip.MustParseAddrPort(ln.Addr().String()) {
			t.Errorf("connection %+v: want an established sdx connection %v -> %v", c, bed.A.Addr, ln.Addr())
		}
		if c.SDX == nil || c.SDX.BytesSent < 1000 || c.SDX.ID == 0 {
			t.Errorf("connection %v: figures %+v; want the 1000 bytes the child wrote", c.Local, c.SDX)
		}
		got = append(got, c.Local.Port())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("sdx stat conns sees local ports %v, the child's are %v", got, want)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("control socket %s: %v, %v; want a socket of mode 0600", sock, st.Mode(), err)
	}

	// Another user: the socket's mode keeps it out, and were it let in,
	// the stack would refuse it (internal/control's own test).
	if out, err := asNobody(t, "stat", "conns", "-json", "-p", strconv.Itoa(pid)); err == nil || !bytes.Contains(out, []byte("permission denied")) {
		t.Errorf("uid 65534 ran sdx stat conns: %v, %q; want permission denied", err, out)
	}

	child.Kill()
	if rs := statConns(t, bin, pid); len(rs) != 0 {
		t.Fatalf("after the child was killed, sdx stat conns sees %+v", rs)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the dead child's control socket %s is still there: %v", sock, err)
	}
}

// asNobody runs this binary as the sdx command with uid and gid 65534,
// from a copy that user may execute; it returns the combined output.
func asNobody(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	dir, copyBin := testutil.ExecutableCopy(t, "sdx.test")
	c := sdxCmd(copyBin, args...)
	c.Dir = dir
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return c.CombinedOutput()
}
