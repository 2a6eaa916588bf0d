package sdx

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

var errUnexpectedRead = errors.New("unexpected read from an idle connection")

// connCheck is the health check connection pools make before they reuse
// an idle connection (go-sql-driver/mysql's and go-redis's connCheck): a
// non-blocking read of one byte on its descriptor, which must would-block.
// peek makes it a recv with MSG_PEEK, as other pools do.
func connCheck(c net.Conn, peek bool) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a syscall.Conn")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		var buf [1]byte
		if peek {
			n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		} else {
			n, rerr = syscall.Read(int(fd), buf[:])
		}
		return true
	})
	switch {
	case err != nil:
		return err
	case n == 0 && rerr == nil:
		return io.EOF
	case n > 0:
		return errUnexpectedRead
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
		return nil
	}
	return rerr
}

// waitCheck waits up to 2s for connCheck to give want, reading and
// peeking; on a kernel socket a read takes a byte of the stream, so there
// readable data is only peeked at.
func waitCheck(t *testing.T, c net.Conn, want error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	checks := []bool{false, true}
	if want == errUnexpectedRead && c.(*Conn).Path() == PathTCP {
		checks = checks[1:]
	}
	for {
		for _, peek := range checks {
			err := connCheck(c, peek)
			if err == want {
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("health check (peek %v): %v, want %v", peek, err, want)
			}
			time.Sleep(time.Millisecond)
			goto again
		}
		return
	again:
	}
}

// checkProbe runs the health check through a connection's life: idle,
// data waiting (which the check leaves in the stream), the peer's close.
func checkProbe(t *testing.T, client, server net.Conn, hard bool) {
	waitCheck(t, client, nil)
	if _, err := server.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	waitCheck(t, client, errUnexpectedRead)
	waitCheck(t, client, errUnexpectedRead) // looking again takes nothing
	buf := make([]byte, 16)
	if n, err := client.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read after the checks: %q, %v; want all of the stream", buf[:n], err)
	}
	waitCheck(t, client, nil)
	if hard {
		server.(interface{ SetLinger(int) error }).SetLinger(0)
	}
	server.Close()
	waitCheck(t, client, io.EOF)
	client.Close()
	rc, err := client.(syscall.Conn).SyscallConn()
	if err == nil {
		err = rc.Read(func(uintptr) bool { return true })
	}
	if err == nil {
		t.Fatal("a closed connection's raw read succeeded")
	}
}

// TestSyscallConnProbe: on the sdx path a pool's health check through
// syscall.Conn reads as on a kernel socket: would-block while the
// connection is alive and idle, readable while data waits (and the data
// stays in the stream), end of file once the peer closed, gracefully or
// not; the descriptors go with the connection.
func TestSyscallConnProbe(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		ln := h.listen(t)
		for _, hard := range []bool{false, true} {
			client, server := h.pair(t, ln)
			checkPath(t, client, PathSDX)
			checkProbe(t, client, server, hard)
		}
	})
}

// TestSyscallConnFallback: on the TCP path SyscallConn is the kernel
// socket's own.
func TestSyscallConnFallback(t *testing.T) {
	bed := leakCheckedBed(t)
	a := vethStack(t, &bed.A)
	ln := kernelListen(t, &bed.B, 0)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := (&Dialer{Stack: a, ProbeTimeout: 20 * time.Millisecond}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	checkPath(t, c, PathTCP)
	server := <-accepted
	if server == nil {
		t.Fatal("no connection accepted")
	}
	checkProbe(t, c, server, false)
}

// BenchmarkSyscallConnProbe is the cost of one health check of an idle
// sdx connection.
func BenchmarkSyscallConnProbe(b *testing.B) {
	h := memHosts(b)
	ln := h.listen(b)
	client, _ := h.pair(b, ln)
	b.ReportAllocs()
	for b.Loop() {
		if err := connCheck(client, false); err != nil {
			b.Fatal(err)
		}
	}
}
