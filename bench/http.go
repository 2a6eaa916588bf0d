package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// NetListening is a stream system whose ends are net.Conns, so that code
// written for package net (net/http, RPC frameworks) runs over it
// unchanged. The listener is in B; dial connects from A and must be called
// on a thread inside A's namespace.
type NetListening interface {
	NetListen(b *Bound) (ln net.Listener, dial func() (net.Conn, error), err error)
}

// httpBody is what the server answers every request with.
var httpBody = make([]byte, 64)

// httpRun: a net/http server in B answers GET with a Size-byte body; Conns
// client goroutines in A each send requests one after another over their
// own keep-alive connection (HTTP/1.1, one http.Transport), and every
// request's time is recorded. Nothing is pinned: this is a Go program as
// its author would write it.
func (r *runner) httpRun() error {
	body := httpBody[:r.s.Size]
	var (
		url  string
		dial func() (net.Conn, error)
	)
	if rh, ok := r.sys.(RemoteHTTP); ok {
		url, dial = rh.HTTPServer()
	} else {
		nl, _ := r.sys.(NetListening)
		ln, d, err := nl.NetListen(r.b)
		if err != nil {
			return err
		}
		url, dial = "http://"+ln.Addr().String()+"/", d
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Write(body)
			}),
			ReadHeaderTimeout: r.bud.Setup + r.bud.Limit,
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), r.bud.Setup)
			defer cancel()
			srv.Shutdown(ctx)
			srv.Close()
			<-served
		}()
	}
	// A connection is dialled in A's namespace, on a thread of its own,
	// whichever goroutine of the transport asks for it.
	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (c net.Conn, err error) {
			err = r.h.A.Do(func() (err error) {
				c, err = dial()
				return err
			})
			return c, err
		},
		MaxIdleConnsPerHost: r.s.Conns,
		MaxConnsPerHost:     r.s.Conns,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: r.bud.Setup + r.bud.Limit}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || n != int64(len(body))) {
			err = fmt.Errorf("http: status %d, %d bytes, want 200 and %d", resp.StatusCode, n, len(body))
		}
		return err
	}
	// Every client connects and warms up before the clock starts.
	var wg sync.WaitGroup
	errs := make([]error, r.s.Conns)
	for i := range r.s.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range max(1, r.bud.Warmup/r.s.Conns) {
				if errs[i] = get(); errs[i] != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("http warm-up: %w", err)
	}
	hists := make([]*Sample, r.s.Conns)
	perClient := max(1, r.bud.Transactions/r.s.Conns)
	cpu0, err := r.cpu()
	if err != nil {
		return err
	}
	t0 := time.Now()
	end := t0.Add(r.bud.Limit)
	for i := range r.s.Conns {
		hists[i] = &Sample{Hist: NewHist()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hists[i]
			for range perClient {
				start := time.Now()
				if r.b.Stopped() || start.After(end) {
					return
				}
				if errs[i] = get(); errs[i] != nil {
					return
				}
				h.Hist.RecordValue(time.Since(start).Nanoseconds())
				h.Count++
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cpu1, err := r.cpu()
	if err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil && !r.b.Stopped() {
		return fmt.Errorf("http: %w", err)
	}
	r.s.Hist = NewHist()
	for _, h := range hists {
		r.s.Hist.Merge(h.Hist)
		r.s.Count += h.Count
	}
	r.s.Elapsed, r.s.CPU = elapsed, time.Duration(cpu1-cpu0)
	return nil
}
