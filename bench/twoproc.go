package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
)

// Two processes, the way users deploy: the server end of sdx-conn-2p and
// tcp-gonet-2p runs in a child process of its own (this binary started
// again, see ServeChild), inside B's namespace; the client end is in this
// process, in A. The child serves an echo listener (rr) and a net/http
// server (http) until its standard input closes. CPU figures add the
// child's CPU time to this process's.
//
//	 this process (client, in A)               child process (server, in B)
//	 sdx.Dial / net.Dial ── veth pair ──────── sdx.Listen / net.Listen
//	                         198.18.0.0/15     echo + net/http

// childEnv names the environment variable that makes this binary serve as
// the child: its value is "system namespace interface address".
const childEnv = "SDXBENCH_CHILD"

// twoProcSystem is a net.Conn system split over two processes.
type twoProcSystem struct {
	name string // sdx-conn-2p or tcp-gonet-2p
	base string // sdx-conn or tcp-gonet: what the child serves
	h    *Hosts
	st   *sdx.Stack // sdx-conn-2p: the client's stack in A

	child      *exec.Cmd
	stdin      io.WriteCloser
	echo, web  netip.AddrPort
	waitErr    chan error
	childStart int64 // the child's CPU time when it became ready, ns
}

func newTwoProc(base string) *twoProcSystem {
	return &twoProcSystem{name: base + "-2p", base: base}
}

func (s *twoProcSystem) Name() string     { return s.name }
func (*twoProcSystem) Kind() Kind         { return Stream }
func (*twoProcSystem) MaxMessage(int) int { return 0 }
func (*twoProcSystem) Pinned() bool       { return false }

// Workloads says which workloads a system runs, when not all of them.
type Workloads interface {
	Workloads() []Workload
}

// Workloads: the server end is a plain echo or an HTTP server.
func (*twoProcSystem) Workloads() []Workload { return []Workload{RR, HTTP, Idle} }

func (s *twoProcSystem) Open(h *Hosts) (err error) {
	s.h = h
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("%s: %w", s.name, err), s.Close())
		}
	}()
	if s.base == "sdx-conn" {
		if s.st, err = openStack(&h.A, 0, nil); err != nil {
			return err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s", childEnv, s.base, h.B.NS, h.B.If, h.B.Addr))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.child = cmd
	s.waitErr = make(chan error, 1)
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if !sc.Scan() {
			ready <- fmt.Errorf("child exited before it was ready: %v", sc.Err())
		} else {
			ready <- s.parseReady(sc.Text())
		}
		io.Copy(io.Discard, out)
		s.waitErr <- cmd.Wait()
	}()
	select {
	case err := <-ready:
		if err != nil {
			return err
		}
	case <-time.After(10 * time.Second):
		return errors.New("child not ready within 10s")
	}
	s.childStart, err = s.childCPU()
	return err
}

// parseReady reads the child's "ready ECHO WEB" line.
func (s *twoProcSystem) parseReady(line string) (err error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ready" {
		return fmt.Errorf("child said %q", line)
	}
	if s.echo, err = netip.ParseAddrPort(f[1]); err != nil {
		return err
	}
	s.web, err = netip.ParseAddrPort(f[2])
	return err
}

// childCPU returns the child's user+system CPU time so far, in ns.
func (s *twoProcSystem) childCPU() (int64, error) {
	d, err := sys.ProcCPU(s.child.Process.Pid)
	return int64(d), err
}

// ExtraCPU is the CPU time the child spent since it became ready.
func (s *twoProcSystem) ExtraCPU() (int64, error) {
	c, err := s.childCPU()
	return c - s.childStart, err
}

func (s *twoProcSystem) Close() error {
	var errs []error
	if s.child != nil {
		s.stdin.Close() // the child's signal to stop
		select {
		case err := <-s.waitErr:
			errs = append(errs, err)
		case <-time.After(5 * time.Second):
			s.child.Process.Kill() // ours, by PID
			errs = append(errs, errors.New("child did not stop within 5s: killed"), <-s.waitErr)
		}
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

// Pair returns the client end only: the server end is the child's.
func (s *twoProcSystem) Pair(b *Bound) (client, server Conn, err error) {
	c, err := s.dial(s.echo)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", s.name, err)
	}
	return newNetConn(s.name, c, b), nil, nil
}

// RemoteHTTP is a system whose HTTP server runs elsewhere: its URL, and
// the dialer that reaches it.
type RemoteHTTP interface {
	HTTPServer() (url string, dial func() (net.Conn, error))
}

func (s *twoProcSystem) HTTPServer() (string, func() (net.Conn, error)) {
	return "http://" + s.web.String() + "/", func() (net.Conn, error) { return s.dial(s.web) }
}

// IsChild reports whether this process was started as a two-process
// system's server end.
func IsChild() bool { return os.Getenv(childEnv) != "" }

// ServeChild is the child's main: it listens in B (over sdx or kernel
// TCP), writes "ready ECHO WEB" to stdout, serves until stdin closes, and
// returns the exit code.
func ServeChild() int {
	if err := serveChild(os.Getenv(childEnv), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "sdxbench child: %v\n", err)
		return 1
	}
	return 0
}

func serveChild(spec string, stop io.Reader, out io.Writer) error {
	f := strings.Fields(spec)
	if len(f) != 4 {
		return fmt.Errorf("%s=%q: want system, namespace, interface, address", childEnv, spec)
	}
	base, ns, ifname := f[0], f[1], f[2]
	addr, err := netip.ParseAddr(f[3])
	if err != nil || !Range.Contains(addr) {
		return fmt.Errorf("address %q is not in %v", f[3], Range)
	}
	host := testbed.Host{NS: ns, If: ifname, Addr: addr}
	var listen func() (net.Listener, error)
	switch base {
	case "sdx-conn":
		st, err := openStack(&host, 0, nil)
		if err != nil {
			return err
		}
		defer st.Close()
		lc := sdx.ListenConfig{Stack: st, DisableFallback: true}
		listen = func() (net.Listener, error) {
			return lc.Listen(context.Background(), "tcp", net.JoinHostPort(addr.String(), "0"))
		}
	case "tcp-gonet":
		listen = func() (ln net.Listener, err error) {
			err = host.Do(func() (err error) {
				ln, err = net.Listen("tcp4", net.JoinHostPort(addr.String(), "0"))
				return err
			})
			return ln, err
		}
	default:
		return fmt.Errorf("no two-process form of %q", base)
	}
	echoLn, err := listen()
	if err != nil {
		return err
	}
	defer echoLn.Close()
	webLn, err := listen()
	if err != nil {
		return err
	}
	defer webLn.Close()
	go serveEcho(echoLn)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(httpBody)
	})}
	go srv.Serve(webLn)
	defer srv.Close()
	if _, err := fmt.Fprintf(out, "ready %s %s\n", echoLn.Addr(), webLn.Addr()); err != nil {
		return err
	}
	io.Copy(io.Discard, stop) // until the parent closes our stdin, or exits
	return nil
}

// serveEcho sends every byte back on every connection ln accepts.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}
