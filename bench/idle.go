package bench

import (
	"errors"
	"time"
)

// idle: one connection open, the server waiting in Recv the way the
// system waits (spinning, parked in the kernel, or polling adaptively),
// nothing sent for the time limit. The figure is the process's CPU time
// over that time, in % of one CPU.
func (r *runner) idle() error {
	c, s, err := r.sys.Pair(r.b)
	if err != nil {
		return err
	}
	defer closeAll(c, s)
	begin := make(chan struct{})
	srv := r.server(func() error {
		<-begin
		if s == nil {
			// The server end is another process's: it waits there; here
			// the client waits for its answer to nothing.
			s = c
		}
		buf := make([]byte, 64)
		for {
			if _, err := s.Recv(buf); err != nil {
				return err
			}
		}
	})
	cpu0, err := r.cpu()
	t0 := time.Now()
	close(begin)
	if err == nil {
		select {
		case <-time.After(r.bud.Limit):
		case err = <-srv:
			// The server ended before the time was up.
			srv = nil
			if ended(err) {
				err = errors.New("idle: the server stopped waiting")
			}
		}
	}
	cpu1, cerr := r.cpu()
	r.s.Elapsed, r.s.CPU, r.s.Count = time.Since(t0), time.Duration(cpu1-cpu0), 1
	c.CloseWrite()
	r.b.Stop()
	if srv != nil {
		if serr := <-srv; !ended(serr) {
			err = errors.Join(err, serr)
		}
	}
	return errors.Join(err, cerr)
}
