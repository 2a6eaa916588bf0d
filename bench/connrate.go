package bench

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"
)

// connrate: the client (inside A) connects; the server accepts and closes
// its sending side; the client sees the end of the stream and closes; the
// server sees that and closes. One connection at a time.
func (r *runner) connrate() error {
	if rc, ok := r.sys.(RemoteConnect); ok {
		return r.connrateRemote(rc)
	}
	ls, _ := r.sys.(Listening)
	ln, err := ls.Listen(r.b)
	if err != nil {
		return err
	}
	defer ln.Close()
	begin := make(chan struct{})
	srv := r.server(func() error {
		<-begin
		var buf [1]byte
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			// Close first, then wait for the client's close: the
			// server's side ends up in TIME_WAIT, which keeps the
			// client's ephemeral ports free.
			if err := c.CloseWrite(); err != nil {
				c.Close()
				return err
			}
			_, err = c.Recv(buf[:])
			c.Close()
			if errors.Is(err, ErrStopped) {
				return err // the run ended while the last close was on its way
			}
			if !closedByPeer(err) {
				return fmt.Errorf("connrate: server expected the client's close, got %v", err)
			}
		}
	})
	cli := r.client(true, func() error {
		<-begin
		return r.connrateClient(ln.Dial)
	})
	close(begin)
	err = <-cli
	r.b.Stop() // ends the server's Accept
	if serr := <-srv; !ended(serr) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return err
	}
	if r.s.Count == 0 {
		return fmt.Errorf("connrate: no connection within %v", r.bud.Limit)
	}
	return nil
}

// connrateClient connects with dial, waits for the server's close and
// closes, for as many connections as the budget allows, and records the
// count, the elapsed time and the CPU time.
func (r *runner) connrateClient(dial func() (Conn, error)) error {
	var one [1]byte
	cpu0, err := r.cpu()
	if err != nil {
		return err
	}
	t0 := time.Now()
	for i := 0; i < r.bud.Conns; i++ {
		if r.b.Stopped() || time.Since(t0) > r.bud.Limit {
			break
		}
		c, err := dial()
		if err != nil {
			return err
		}
		_, err = c.Recv(one[:])
		c.Close()
		if !closedByPeer(err) {
			return fmt.Errorf("connrate: client expected the server's close, got %v", err)
		}
		r.s.Count++
	}
	t1 := time.Now()
	cpu1, err := r.cpu()
	r.s.Elapsed, r.s.CPU = t1.Sub(t0), time.Duration(cpu1-cpu0)
	return err
}

// connrateRemote is connrate against a closer in another process, which
// accepts and closes as connrate's server does.
func (r *runner) connrateRemote(rc RemoteConnect) error {
	cli := r.client(false, func() error {
		return r.connrateClient(func() (Conn, error) { return rc.DialCloser(r.b) })
	})
	if err := <-cli; err != nil {
		return err
	}
	if r.s.Count == 0 {
		return fmt.Errorf("connrate: no connection within %v", r.bud.Limit)
	}
	return nil
}

// closedByPeer reports whether a Recv error says the peer closed: the end
// of the stream, or a reset (sdx's CloseSocket is a hard close).
func closedByPeer(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}
