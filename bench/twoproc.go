package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/sys"
)

// Two processes, the way users deploy: the server end of sdx-conn-2p,
// tcp-gonet-2p and xsk-floor-2p runs in a child process of its own (this
// binary started again, see ServeChild), inside B's namespace; the client
// end is in this process, in A. CPU figures add the child's CPU time to
// this process's.
//
//	 this process (client, in A)               child process (server, in B)
//	 sdx.Dial / net.Dial ── veth pair ──────── sdx.Listen / net.Listen:
//	                         198.18.0.0/15     echo, sink, closer, net/http
//	 raw AF_XDP frames   ── veth pair ──────── raw AF_XDP: echo or sink
//	 requests on stdin   ── pipes ──────────── answers on stdout
//
// The stream child serves an echo listener (rr, idle), a sink (msgrate,
// bulk: it reads to EOF and counts), a closer (connrate: it accepts and
// closes, as the one-process server does) and a net/http server (http).
// The floor's child turns frames around, or counts them while the parent
// has asked it to sink. The parent asks on the child's stdin, one line
// at a time, and the child answers on its stdout:
//
//	reset SIZE  → ok              count from zero; a stream sink reads SIZE bytes per call
//	drain N MS  → sunk B R E AGO  wait up to MS ms for N ended sink connections
//	                              (streams) or N frames (the floor, or until
//	                              none came for 20 ms); B bytes and R reads
//	                              counted, E connections ended, the last
//	                              arrival AGO ns before the answer
//
// The child stops when its stdin closes, and dies with the thread that
// started it (Pdeathsig), which stays alive as long as the child.

// childEnv names the environment variable that makes this binary serve as
// the child: its value is "system namespace interface address".
const childEnv = "SDXBENCH_CHILD"

// childProc is a two-process system's server end: a child process, and
// the pipes to ask it things.
type childProc struct {
	pid     int
	stdin   io.WriteCloser
	lines   chan string // the child's answers, line by line
	exited  chan struct{}
	waitErr error    // set before exited closes
	ready   []string // the fields of the child's "ready" line after "ready"
	cpu0    int64    // the child's CPU time when it became ready, ns

	mu sync.Mutex // one request at a time
}

// startChild starts this binary as a child serving spec, and waits until
// it says it is ready.
func startChild(spec string) (*childProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &childProc{lines: make(chan string, 4), exited: make(chan struct{})}
	started := make(chan error, 1)
	readyc := make(chan error, 1)
	// The child is started from a thread locked for its whole life: the
	// kernel sends Pdeathsig when the thread that forked it exits, and
	// the runtime retires threads.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), childEnv+"="+spec)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var err error
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			started <- err
			return
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		c.pid = cmd.Process.Pid
		started <- nil
		sc := bufio.NewScanner(out)
		if !sc.Scan() {
			readyc <- fmt.Errorf("child exited before it was ready: %v", sc.Err())
		} else if f := strings.Fields(sc.Text()); len(f) == 0 || f[0] != "ready" {
			readyc <- fmt.Errorf("child said %q", sc.Text())
		} else {
			c.ready = f[1:]
			readyc <- nil
		}
		for sc.Scan() {
			line := sc.Text()
			if !isAnswer(line) {
				fmt.Fprintf(os.Stderr, "sdxbench child: %s\n", line)
				continue
			}
			select {
			case c.lines <- line:
			default: // nobody asked: the request that did times out
			}
		}
		io.Copy(io.Discard, out)
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	select {
	case err = <-readyc:
	case <-time.After(10 * time.Second):
		err = errors.New("child not ready within 10s")
	}
	if err == nil {
		c.cpu0, err = c.cpu()
	}
	if err != nil {
		return nil, errors.Join(err, c.stop())
	}
	return c, nil
}

// isAnswer reports whether a line the child wrote is an answer to a
// request; anything else it may print is passed on to stderr.
func isAnswer(line string) bool {
	return line == "ok" || strings.HasPrefix(line, "sunk ") || strings.HasPrefix(line, "error ")
}

// request sends one line to the child and returns its answer, waiting up
// to timeout.
func (c *childProc) request(line string, timeout time.Duration) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.lines) > 0 {
		<-c.lines // a late answer to a request that timed out
	}
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return "", fmt.Errorf("child: %w", err)
	}
	select {
	case ans := <-c.lines:
		if strings.HasPrefix(ans, "error ") {
			return "", fmt.Errorf("child: %s: %s", line, ans[len("error "):])
		}
		return ans, nil
	case <-c.exited:
		return "", fmt.Errorf("child: exited during %q: %v", line, c.waitErr)
	case <-time.After(timeout):
		return "", fmt.Errorf("child: no answer to %q within %v", line, timeout)
	}
}

// cpu returns the child's user+system CPU time so far, in ns.
func (c *childProc) cpu() (int64, error) {
	d, err := sys.ProcCPU(c.pid)
	return int64(d), err
}

// stop closes the child's stdin, its signal to stop, and waits for it;
// after 5 s it kills it, by its PID.
func (c *childProc) stop() error {
	c.stdin.Close()
	select {
	case <-c.exited:
		return c.waitErr
	case <-time.After(5 * time.Second):
		if p, err := os.FindProcess(c.pid); err == nil {
			p.Kill()
		}
		<-c.exited
		return errors.New("child did not stop within 5s: killed")
	}
}

// SinkReport is what a remote sink counted since its reset.
type SinkReport struct {
	Bytes, Reads int64     // payload bytes, and reads (frames) that had some
	Ended        int64     // stream connections that reached EOF
	Last         time.Time // the last arrival, on this process's clock
}

// resetSink asks the child to count from zero, reading size bytes per
// call on a stream.
func (c *childProc) resetSink(size int) error {
	ans, err := c.request(fmt.Sprintf("reset %d", size), 5*time.Second)
	if err == nil && ans != "ok" {
		err = fmt.Errorf("child: reset: %q", ans)
	}
	return err
}

// drainSink asks the child to wait up to wait for n ended connections
// (streams) or n frames (the floor), and returns its counts. Last is
// off by the pipe's latency, a few µs late.
func (c *childProc) drainSink(n int64, wait time.Duration) (SinkReport, error) {
	ans, err := c.request(fmt.Sprintf("drain %d %d", n, wait.Milliseconds()), wait+5*time.Second)
	at := time.Now()
	if err != nil {
		return SinkReport{}, err
	}
	f := strings.Fields(ans)
	var v [4]int64
	if len(f) != 5 || f[0] != "sunk" {
		return SinkReport{}, fmt.Errorf("child: drain: %q", ans)
	}
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return SinkReport{}, fmt.Errorf("child: drain: %q: %w", ans, err)
		}
	}
	return SinkReport{Bytes: v[0], Reads: v[1], Ended: v[2], Last: at.Add(-time.Duration(v[3]))}, nil
}

// RemoteSink is a system whose server end runs in another process: the
// one-way workloads (msgrate, bulk) send to its sink, and the sink
// reports what it counted.
type RemoteSink interface {
	// DialSink connects a client end to the remote sink.
	DialSink(b *Bound) (Conn, error)
	// ResetSink makes the sink count from zero; a stream sink then reads
	// size bytes per call.
	ResetSink(size int) error
	// DrainSink waits up to wait until n sink connections have ended
	// (streams) or n messages arrived (datagrams, or until none came for a
	// while), and returns what the sink counted.
	DrainSink(n int64, wait time.Duration) (SinkReport, error)
}

// RemoteConnect is a stream system whose server end runs in another
// process: connrate connects to its closer, which accepts and closes.
type RemoteConnect interface {
	DialCloser(b *Bound) (Conn, error)
}

// RemoteHTTP is a system whose HTTP server runs elsewhere: its URL, and
// the dialer that reaches it.
type RemoteHTTP interface {
	HTTPServer() (url string, dial func() (net.Conn, error))
}

// twoProcSystem is a net.Conn system split over two processes.
type twoProcSystem struct {
	name string // sdx-conn-2p or tcp-gonet-2p
	base string // sdx-conn or tcp-gonet: what the child serves
	h    *Hosts
	st   *sdx.Stack // sdx-conn-2p: the client's stack in A

	child                   *childProc
	echo, web, sink, closer netip.AddrPort
}

// connPollers is the pollers of the stacks of sdx-conn system base.
func connPollers(base string) int {
	if base == "sdx-conn-2poll" {
		return 2
	}
	return 1
}

func newTwoProc(base string) *twoProcSystem {
	return &twoProcSystem{name: base + "-2p", base: base}
}

func (s *twoProcSystem) Name() string     { return s.name }
func (s *twoProcSystem) Queues() int      { return connPollers(s.base) }
func (*twoProcSystem) Kind() Kind         { return Stream }
func (*twoProcSystem) MaxMessage(int) int { return 0 }
func (*twoProcSystem) Pinned() bool       { return false }

func (s *twoProcSystem) Open(h *Hosts) (err error) {
	s.h = h
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("%s: %w", s.name, err), s.Close())
		}
	}()
	if strings.HasPrefix(s.base, "sdx-conn") {
		if s.st, err = openStack(&h.A, 0, nil, connPollers(s.base)); err != nil {
			return err
		}
	}
	if s.child, err = startChild(fmt.Sprintf("%s %s %s %s", s.base, h.B.NS, h.B.If, h.B.Addr)); err != nil {
		return err
	}
	if len(s.child.ready) != 4 {
		return fmt.Errorf("child ready with %q: want echo, web, sink and closer addresses", s.child.ready)
	}
	for i, ap := range []*netip.AddrPort{&s.echo, &s.web, &s.sink, &s.closer} {
		if *ap, err = netip.ParseAddrPort(s.child.ready[i]); err != nil {
			return err
		}
	}
	return nil
}

// ExtraCPU is the CPU time the child spent since it became ready.
func (s *twoProcSystem) ExtraCPU() (int64, error) { return s.child.extraCPU() }

// ChildPID is the child's process id.
func (s *twoProcSystem) ChildPID() int { return s.child.pid }

func (c *childProc) extraCPU() (int64, error) {
	t, err := c.cpu()
	return t - c.cpu0, err
}

func (s *twoProcSystem) Close() error {
	var errs []error
	if s.child != nil {
		errs = append(errs, s.child.stop())
		s.child = nil
	}
	if s.st != nil {
		errs = append(errs, s.st.Close())
		s.st = nil
	}
	return errors.Join(errs...)
}

// dial connects from A to the child's address ap.
func (s *twoProcSystem) dial(ap netip.AddrPort) (net.Conn, error) {
	if s.st != nil {
		d := sdx.Dialer{Stack: s.st, DisableFallback: true}
		c, err := d.Dial("tcp", ap.String())
		if err != nil {
			return nil, err
		}
		if p := c.(*sdx.Conn).Path(); p != sdx.PathSDX {
			c.Close()
			return nil, fmt.Errorf("%s: the dial took path %s", s.name, p)
		}
		return c, nil
	}
	var c net.Conn
	err := s.h.A.Do(func() (err error) {
		c, err = net.Dial("tcp4", ap.String())
		return err
	})
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return c, err
}

func (s *twoProcSystem) dialConn(ap netip.AddrPort, b *Bound) (Conn, error) {
	c, err := s.dial(ap)
	if err != nil {
		return nil, netErr(s.name, b, err)
	}
	return newNetConn(s.name, c, b), nil
}

// Pair returns the client end only, connected to the child's echo: the
// server end is the child's.
func (s *twoProcSystem) Pair(b *Bound) (client, server Conn, err error) {
	client, err = s.dialConn(s.echo, b)
	return client, nil, err
}

func (s *twoProcSystem) DialSink(b *Bound) (Conn, error)   { return s.dialConn(s.sink, b) }
func (s *twoProcSystem) DialCloser(b *Bound) (Conn, error) { return s.dialConn(s.closer, b) }
func (s *twoProcSystem) ResetSink(size int) error          { return s.child.resetSink(size) }

func (s *twoProcSystem) DrainSink(n int64, wait time.Duration) (SinkReport, error) {
	return s.child.drainSink(n, wait)
}

func (s *twoProcSystem) HTTPServer() (string, func() (net.Conn, error)) {
	return "http://" + s.web.String() + "/", func() (net.Conn, error) { return s.dial(s.web) }
}

// IsChild reports whether this process was started as a two-process
// system's server end.
func IsChild() bool { return os.Getenv(childEnv) != "" }

// ServeChild is the child's main: it serves in B (over sdx, kernel TCP or
// raw AF_XDP), writes "ready ..." to stdout, answers the parent's
// requests until stdin closes, and returns the exit code.
func ServeChild() int {
	if err := serveChild(context.Background(), os.Getenv(childEnv), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "sdxbench child: %v\n", err)
		return 1
	}
	return 0
}
