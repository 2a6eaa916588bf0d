package provider

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
)

// TestVethManyConnections runs many concurrent connections on one
// listener over the real path, each echoing seeded data byte-exact, with
// the default Config: the windows the connections are granted together
// far exceed the shared buffer pool, which must neither deadlock nor lose
// anything.
func TestVethManyConnections(t *testing.T) {
	testutil.CheckGoroutines(t)
	conns, size := vethManyConns, int64(vethManyBytes)
	if testing.Short() {
		conns, size = 100, 256<<10
	}
	p := newVethPair(t, Config{})
	ln := p.listen(t, 1024)

	// b echoes every connection; it hard-closes only after every client
	// has read everything back.
	var srv sync.WaitGroup
	read := make(chan struct{})
	srvErr := make(chan error, conns)
	srv.Add(1)
	go func() {
		defer srv.Done()
		for range conns {
			s, _, err := p.b.Accept(ln)
			if err != nil {
				srvErr <- fmt.Errorf("accept: %w", err)
				return
			}
			srv.Add(1)
			go func() {
				defer srv.Done()
				defer func() {
					<-read
					p.b.CloseSocket(s)
				}()
				if err := echoUntilEOF(p.b, s, 16<<10); err != nil {
					srvErr <- fmt.Errorf("echo: %w", err)
				}
			}()
		}
	}()

	start := time.Now()
	var cli sync.WaitGroup
	cliErr := make(chan error, conns)
	for i := range conns {
		cli.Add(1)
		go func() {
			defer cli.Done()
			s, err := p.a.Socket()
			if err != nil {
				cliErr <- err
				return
			}
			defer p.a.CloseSocket(s)
			if err := p.a.Connect(s, netip.AddrPortFrom(p.bed.B.Addr, p.portB)); err != nil {
				cliErr <- fmt.Errorf("conn %d: connect: %w", i, err)
				return
			}
			got := drainAsync(p.a, s, uint64(i), 16<<10)
			err = sendSeeded(func(b []byte) (int, error) { return p.a.Send(s, b) }, uint64(i), size, 16<<10)
			if err == nil {
				err = p.a.Shutdown(s)
			}
			r := <-got
			switch {
			case err != nil:
				cliErr <- fmt.Errorf("conn %d: send: %w", i, err)
			case r.err != nil:
				cliErr <- fmt.Errorf("conn %d: receive after %d bytes: %w", i, r.n, r.err)
			case r.n != size:
				cliErr <- fmt.Errorf("conn %d: echoed %d of %d bytes", i, r.n, size)
			}
		}()
	}
	done := make(chan struct{})
	go func() { cli.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(vethManyTimeout):
		t.Fatalf("stalled after %v\na: %+v\nb: %+v", vethManyTimeout, p.a.Stats(), p.b.Stats())
	}
	el := time.Since(start)
	close(read)
	srv.Wait()
	close(cliErr)
	close(srvErr)
	for err := range cliErr {
		t.Error(err)
	}
	for err := range srvErr {
		t.Error(err)
	}
	total := int64(conns) * size
	sa, sb := p.a.Stats(), p.b.Stats()
	t.Logf("%d connections × %d KiB each way in %v (%.2f Gbit/s each way)", conns, size>>10, el.Round(time.Millisecond), float64(total*8)/el.Seconds()/1e9)
	t.Logf("a: retransmits %d, rto expiries %d, no-buffer drops %d, reneged %d; b: retransmits %d, rto expiries %d, no-buffer drops %d, reneged %d",
		sa.Retransmits, sa.RTOExpiries, sa.Drops.NoBuffer, sa.Reneged, sb.Retransmits, sb.RTOExpiries, sb.Drops.NoBuffer, sb.Reneged)
	if sa.Sockets != 0 || sb.Sockets != 1 {
		t.Errorf("sockets left: a %d, b %d (want 0 and the listener)", sa.Sockets, sb.Sockets)
	}
	for name, st := range map[string]Stats{"a": sa, "b": sb} {
		if st.BuffersHeld() != 0 || st.BuffersFree+st.BuffersSendQueued+st.BuffersInFlight+st.BuffersOutOfOrder+st.BuffersRecvQueued+st.BuffersSending != st.Buffers {
			t.Errorf("%s: buffer accounting: %+v", name, st)
		}
		if st.OpsInUse != 0 {
			t.Errorf("%s: %d ops in use", name, st.OpsInUse)
		}
	}
}
