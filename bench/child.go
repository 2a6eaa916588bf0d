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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/testbed"
)

// The child's side of the two-process systems (twoproc.go).

// childLife bounds how long a child serves, should its parent neither
// close its stdin nor die.
const childLife = 2 * time.Hour

// floorQuiet is how long the floor's sink waits for the next frame before
// a drain counts the rest as lost, as the one-process floor does.
const floorQuiet = 20 * time.Millisecond

// sink counts what a child receives one way. Its counters are written by
// the goroutines that receive and read by the one that answers requests.
type sink struct {
	base    time.Time
	bytes   atomic.Int64
	reads   atomic.Int64
	ended   atomic.Int64
	last    atomic.Int64 // the last arrival, in ns since base
	size    atomic.Int64 // a stream sink's read size
	on      atomic.Bool  // the floor: count frames instead of echoing them
	changed chan struct{}
}

func newSink() *sink {
	k := &sink{base: time.Now(), changed: make(chan struct{}, 1)}
	k.size.Store(64 << 10)
	return k
}

// add counts one read of n bytes.
func (k *sink) add(n int) {
	k.bytes.Add(int64(n))
	k.reads.Add(1)
	k.last.Store(int64(time.Since(k.base)))
}

// end counts a stream connection that reached EOF.
func (k *sink) end() {
	k.ended.Add(1)
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

func (k *sink) reset(size int) {
	k.bytes.Store(0)
	k.reads.Store(0)
	k.ended.Store(0)
	k.last.Store(int64(time.Since(k.base)))
	k.size.Store(int64(size))
}

// drain waits up to wait until n connections ended (stream), or n frames
// arrived or none came for floorQuiet (datagrams), and writes the counts.
// The floor goes back to echoing.
func (k *sink) drain(n int64, stream bool, wait time.Duration) string {
	end := time.Now().Add(wait)
	tick := time.NewTicker(floorQuiet / 4)
	defer tick.Stop()
	prev := int64(-1)
	quietSince := time.Now()
	for time.Now().Before(end) {
		if stream && k.ended.Load() >= n {
			break
		}
		if !stream {
			r := k.reads.Load()
			if r >= n {
				break
			}
			if r != prev {
				prev, quietSince = r, time.Now()
			} else if time.Since(quietSince) >= floorQuiet {
				break
			}
		}
		select {
		case <-k.changed:
		case <-tick.C:
		}
	}
	k.on.Store(false)
	if stream && k.ended.Load() < n {
		return fmt.Sprintf("error %d of %d sink connections ended within %v", k.ended.Load(), n, wait)
	}
	ago := time.Since(k.base) - time.Duration(k.last.Load())
	return fmt.Sprintf("sunk %d %d %d %d", k.bytes.Load(), k.reads.Load(), k.ended.Load(), ago.Nanoseconds())
}

// serveChild parses spec ("system namespace interface address"), serves
// that system's server end in the namespace, writes "ready ..." to out,
// and answers requests read from in until it closes.
func serveChild(ctx context.Context, spec string, in io.Reader, out io.Writer) (err error) {
	f := strings.Fields(spec)
	if len(f) != 4 {
		return fmt.Errorf("%s=%q: want system, namespace, interface, address", childEnv, spec)
	}
	base, ns, ifname := f[0], f[1], f[2]
	addr, err := netip.ParseAddr(f[3])
	if err != nil || !addr.Is4() || !Range.Contains(addr) {
		return fmt.Errorf("address %q is not in %v", f[3], Range)
	}
	host := testbed.Host{NS: ns, If: ifname, Addr: addr}
	k := newSink()
	b := NewBound(ctx, childLife)
	defer b.Stop()
	var ready string
	stream := true
	switch base {
	case "sdx-conn", "sdx-conn-2poll", "tcp-gonet":
		stop, r, err := serveStreams(base, &host, k)
		if err != nil {
			return err
		}
		defer stop()
		ready = r
	case "xsk-floor":
		stream = false
		stop, err := serveFloor(&host, k, b)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stop()) }()
	default:
		return fmt.Errorf("no two-process form of %q", base)
	}
	if _, err := fmt.Fprintf(out, "ready%s\n", ready); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() { // until the parent closes our stdin, or exits
		if _, err := fmt.Fprintln(out, answer(sc.Text(), k, stream)); err != nil {
			return err
		}
	}
	return nil
}

// answer is the child's answer to one request line.
func answer(line string, k *sink, stream bool) string {
	f := strings.Fields(line)
	num := func(i int) (int64, error) {
		if i >= len(f) {
			return 0, fmt.Errorf("missing argument")
		}
		return strconv.ParseInt(f[i], 10, 64)
	}
	switch {
	case len(f) == 2 && f[0] == "reset":
		size, err := num(1)
		if err != nil || size < 1 || size > 16<<20 {
			return fmt.Sprintf("error reset %q: want a read size of 1 B to 16 MiB", f[1])
		}
		k.reset(int(size))
		k.on.Store(true)
		return "ok"
	case len(f) == 3 && f[0] == "drain":
		n, err1 := num(1)
		ms, err2 := num(2)
		if err1 != nil || err2 != nil || n < 0 || ms < 0 || ms > 600000 {
			return fmt.Sprintf("error drain %q: want a count and up to 600000 ms", line)
		}
		return k.drain(n, stream, time.Duration(ms)*time.Millisecond)
	}
	return fmt.Sprintf("error unknown request %q", line)
}

// serveStreams listens in host's namespace over sdx or kernel TCP and
// serves an echo, the sink, a closer and net/http; it returns the
// listeners' addresses as the rest of the ready line.
func serveStreams(base string, host *testbed.Host, k *sink) (stop func(), ready string, err error) {
	var listen func() (net.Listener, error)
	var closers []func() error
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	switch base {
	case "sdx-conn", "sdx-conn-2poll":
		st, err := openStack(host, 0, nil, connPollers(base))
		if err != nil {
			return nil, "", err
		}
		closers = append(closers, st.Close)
		lc := sdx.ListenConfig{Stack: st, DisableFallback: true}
		listen = func() (net.Listener, error) {
			return lc.Listen(context.Background(), "tcp", net.JoinHostPort(host.Addr.String(), "0"))
		}
	default:
		listen = func() (ln net.Listener, err error) {
			err = host.Do(func() (err error) {
				ln, err = net.Listen("tcp4", net.JoinHostPort(host.Addr.String(), "0"))
				return err
			})
			return ln, err
		}
	}
	var lns [4]net.Listener // echo, web, sink, closer
	for i := range lns {
		if lns[i], err = listen(); err != nil {
			return nil, "", err
		}
		closers = append(closers, lns[i].Close)
		ready += " " + lns[i].Addr().String()
	}
	go serveEcho(lns[0])
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(httpBody)
	})}
	go srv.Serve(lns[1])
	closers = append(closers, srv.Close)
	go serveSink(lns[2], k)
	go serveCloser(lns[3])
	return stop, ready, nil
}

// accept takes the next connection, with TCP_NODELAY on kernel TCP.
func accept(ln net.Listener) (net.Conn, error) {
	c, err := ln.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return c, err
}

// serveEach runs handle on its own goroutine for every connection ln
// accepts, and closes the connection when handle returns.
func serveEach(ln net.Listener, handle func(c net.Conn)) {
	for {
		c, err := accept(ln)
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// serveEcho sends every byte back on every connection ln accepts.
func serveEcho(ln net.Listener) {
	serveEach(ln, func(c net.Conn) {
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
	})
}

// serveSink reads every connection ln accepts to its end, counting in k,
// as the one-process msgrate and bulk servers do.
func serveSink(ln net.Listener, k *sink) {
	serveEach(ln, func(c net.Conn) {
		buf := make([]byte, k.size.Load())
		for {
			n, err := c.Read(buf)
			if n > 0 {
				k.add(n)
			}
			if err == io.EOF {
				k.end()
			}
			if err != nil {
				return
			}
		}
	})
}

// serveCloser serves connrate as the one-process server does: accept,
// close the sending side, wait for the client's close, close. One
// connection at a time.
func serveCloser(ln net.Listener) {
	var buf [1]byte
	for {
		c, err := accept(ln)
		if err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(buf[:])
		c.Close()
	}
}
