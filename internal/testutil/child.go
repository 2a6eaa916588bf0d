package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Child is the test binary started again to run a test's peer in a
// process of its own; the binary's TestMain acts on the environment the
// child is given. Stdin and Out are the child's standard input and output.
type Child struct {
	Cmd   *exec.Cmd
	Stdin io.WriteCloser
	Out   *bufio.Reader

	once sync.Once
	err  error
}

// StartChild starts the test binary again with env added to its
// environment and no test to run, sharing our standard error. The test's
// cleanup kills the child, by its PID, if it still runs.
func StartChild(t testing.TB, env ...string) *Child {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &Child{Cmd: exec.Command(bin, "-test.run=^$")}
	c.Cmd.Env = append(os.Environ(), env...)
	c.Cmd.Stderr = os.Stderr
	var out io.ReadCloser
	c.Stdin, err = c.Cmd.StdinPipe()
	if err == nil {
		out, err = c.Cmd.StdoutPipe()
	}
	if err == nil {
		err = c.Cmd.Start()
	}
	if err != nil {
		t.Fatalf("start child: %v", err)
	}
	c.Out = bufio.NewReader(out)
	t.Cleanup(c.Kill)
	return c
}

// wait waits for the child once, however many callers ask.
func (c *Child) wait() error {
	c.once.Do(func() { c.err = c.Cmd.Wait() })
	return c.err
}

// Kill ends the child with SIGKILL and returns when it is gone.
func (c *Child) Kill() {
	c.Cmd.Process.Kill() // fails only when the child has already ended
	c.wait()
}

// Stop closes the child's input, which tells it to end, and waits up to
// bound for it; a child still running then is killed and Stop says so.
func (c *Child) Stop(bound time.Duration) error {
	c.Stdin.Close()
	done := make(chan struct{})
	go func() {
		c.wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(bound):
		c.Cmd.Process.Kill()
		<-done
		return fmt.Errorf("the child did not end within %v of its input closing", bound)
	}
}

// ChildMain is the TestMain of a package whose tests start children: in
// a child, where env is set, it exits with what child returns for env's
// value; otherwise it runs the tests.
func ChildMain(m *testing.M, env string, child func(v string) int) {
	if v := os.Getenv(env); v != "" {
		os.Exit(child(v))
	}
	os.Exit(m.Run())
}

// ExecutableCopy copies the test binary, as name, into a new directory
// that every user may enter, so that a child run as another user can
// execute it. It returns the directory, which the test's cleanup
// removes, and the copy's path.
func ExecutableCopy(t testing.TB, name string) (dir, bin string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err == nil {
		dir, err = os.MkdirTemp("", "sdx-test-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin = filepath.Join(dir, name)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}
