// Package testutil holds helpers shared by sdx's tests: the privilege gate
// that turns a skip into a failure under CI, and leak checks.
package testutil

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (CI=true), where a privileged
// test that cannot run is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Privileged skips t when the process cannot use netns, veth, BPF and AF_XDP,
// and fails it instead under CI.
func Privileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	SkipOrFail(t, "needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN for netns)")
}

// SkipOrFail skips outside CI and fails under CI, with the same reason.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("cannot run under CI=true: %s", reason)
	}
	t.Skip(reason)
}

// Long skips t in -short mode.
func Long(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("long test skipped in -short mode")
	}
}

// CheckGoroutines registers a cleanup that fails t when goroutines started
// during the test are still running a second after it ends.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// CheckFDs registers a cleanup that fails t when the process holds more open
// file descriptors after the test than before it.
func CheckFDs(t testing.TB) {
	t.Helper()
	startNetpoller()
	before := openFDs()
	t.Cleanup(func() {
		deadline := time.Now().Add(time.Second)
		for {
			after := openFDs()
			if len(after) <= len(before) {
				return
			}
			if time.Now().After(deadline) {
				var leaked []string
				for fd, target := range after {
					if _, ok := before[fd]; !ok {
						leaked = append(leaked, fd+" -> "+target)
					}
				}
				t.Errorf("fd leak: %d before, %d after: %s", len(before), len(after), strings.Join(leaked, ", "))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// startNetpoller makes the Go runtime open its netpoller (an epoll
// instance and an eventfd, kept for the process's life) if nothing has
// yet, so that a test that is the first to use it is not blamed for them.
func startNetpoller() {
	r, w, err := os.Pipe() // pollable: registering it starts the netpoller
	if err != nil {
		return
	}
	r.SetReadDeadline(time.Now())
	r.Close()
	w.Close()
}

func openFDs() map[string]string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		m[e.Name()] = target
	}
	return m
}

// OwnNamespaces lists, comma-separated, the network namespaces this process's
// testbeds created (named sdx-<pid>-...). Other test binaries run alongside,
// so a leak check compares only these.
func OwnNamespaces(t testing.TB) string {
	t.Helper()
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	mine := fmt.Sprintf("sdx-%d-", os.Getpid())
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), mine) {
			names = append(names, e.Name())
		}
	}
	return strings.Join(names, ",")
}

// XDPShown returns the XDP part of `ip -d link show` for dev in namespace
// ns ("xdp prog/xdp id 7 ...", "xdpgeneric ..."): empty when no program is
// attached.
func XDPShown(t testing.TB, ns, dev string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-d", "link", "show", "dev", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v: %s", err, out)
	}
	var xdp []string
	for _, f := range strings.Fields(string(out)) {
		if strings.Contains(f, "xdp") {
			xdp = append(xdp, f)
		}
	}
	return strings.Join(xdp, " ")
}

// CloseAtEnd closes c when the test ends and fails the test if Close
// fails; what names c in the failure.
func CloseAtEnd(t testing.TB, c io.Closer, what string) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close %s: %v", what, err)
		}
	})
}

// NoErrWithin fails t unless a nil error arrives on ch within bound;
// what says what ch's sender does.
func NoErrWithin(t testing.TB, ch <-chan error, bound time.Duration, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(bound):
		t.Fatalf("%s: not done within %v", what, bound)
	}
}
