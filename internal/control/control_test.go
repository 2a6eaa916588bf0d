package control

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sdx-project/sdx/internal/testutil"
)

// envQuery makes the test binary a client: it queries the socket named
// and prints the outcome.
const envQuery = "SDX_CONTROL_QUERY"

func TestMain(m *testing.M) {
	testutil.ChildMain(m, envQuery, func(p string) int {
		if _, err := Query(p, CmdStack); err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		fmt.Println("OK")
		return 0
	})
}

func echoHandler(cmd string) Reply { return Reply{Stack: &Stack{Interface: cmd}} }

// A client gets its command's reply; a bad command is refused; the socket
// is 0600 and gone after Close.
func TestServeAndClose(t *testing.T) {
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	dir := t.TempDir()
	s, err := Listen(dir, echoHandler, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d-", os.Getpid()); !strings.HasPrefix(filepath.Base(s.Path()), want) {
		t.Errorf("socket %s is not named after the pid", s.Path())
	}
	if st, err := os.Stat(s.Path()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", st.Mode(), err)
	}
	for _, cmd := range []string{CmdStack, CmdConns, CmdCounters} {
		r, err := Query(s.Path(), cmd)
		if err != nil || r.Stack == nil || r.Stack.Interface != cmd {
			t.Fatalf("%s: %+v, %v", cmd, r, err)
		}
	}
	if _, err := Query(s.Path(), "reboot"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command: %v", err)
	}
	if got := Sockets(dir, os.Getpid()); len(got) != 1 || got[0] != s.Path() {
		t.Fatalf("Sockets: %v", got)
	}
	s.Close()
	s.Close()
	if _, err := os.Stat(s.Path()); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

// The socket of a process that no longer exists is removed when a stack
// starts and when a client lists the sockets; a live process's stays.
func TestStaleRemoved(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, fmt.Sprintf("%d-1.sock", dead.Process.Pid))
	live := filepath.Join(dir, "1-1.sock") // init lives for ever
	other := filepath.Join(dir, "notes.txt")
	for _, p := range []string{stale, live, other} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := Sockets(dir, 0); len(got) != 1 || got[0] != live {
		t.Fatalf("Sockets: %v, want only %s", got, live)
	}
	for p, want := range map[string]bool{stale: false, live: true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", p, err == nil, want)
		}
	}
}

// A client of another user is refused by the server itself (SO_PEERCRED),
// even when the socket's mode would let it in.
func TestOtherUserRefused(t *testing.T) {
	testutil.Privileged(t) // to run a process as another user
	testutil.CheckGoroutines(t)
	dir, copyBin := testutil.ExecutableCopy(t, "control.test")
	s, err := Listen(filepath.Join(dir, "run"), echoHandler, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	run := func(uid uint32) string {
		c := exec.Command(copyBin, "-test.run=^$")
		c.Dir = dir
		c.Env = append(os.Environ(), envQuery+"="+s.Path())
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, _ := c.CombinedOutput()
		return string(out)
	}
	if out := run(0); !strings.HasPrefix(out, "OK") {
		t.Fatalf("root's query: %q", out)
	}
	if err := os.Chmod(s.Path(), 0o666); err != nil {
		t.Fatal(err)
	}
	if out := run(65534); !strings.Contains(out, "permission denied: uid 65534") {
		t.Fatalf("uid 65534's query: %q, want the server's refusal", out)
	}
}
