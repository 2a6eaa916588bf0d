package sdx

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
)

type pathKey struct{}

// net/http works unchanged over sdx: http.Server.Serve on a Listener, and
// a client whose Transport dials with a Dialer. A plain kernel client
// reaches the same server.
func TestHTTP(t *testing.T) {
	h := leakCheckedHosts(t)
	ln := h.listen(t)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Read the whole body first: Go's HTTP/1 server closes the
			// request body once the response is flushed.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Path", string(r.Context().Value(pathKey{}).(Path)))
			w.Write(body)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, pathKey{}, c.(*Conn).Path())
		},
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	}()

	d := &Dialer{Stack: h.a, ProbeTimeout: testProbe}
	clients := map[Path]*http.Transport{
		PathSDX: {DialContext: d.DialContext},
		PathTCP: {DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = sys.InNetns(h.bed.A.NS, func() error {
				var nd net.Dialer
				c, err = nd.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}},
	}
	url := "http://" + ln.Addr().String() + "/echo"
	for path, tr := range clients {
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		start := time.Now()
		const n = 50
		for i := range n {
			body := seeded(uint64(i), 1+i*997)
			resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Fatalf("%s: request %d: %v", path, i, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%s: request %d: %d bytes back of %d (error %v)", path, i, len(got), len(body), err)
			}
			if p := resp.Header.Get("X-Path"); p != string(path) {
				t.Fatalf("%s client served over %q", path, p)
			}
		}
		took := time.Since(start)
		// A large body, once.
		big := seeded(99, 8<<20)
		resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("%s: 8 MiB body: %d bytes back (error %v)", path, len(got), err)
		}
		tr.CloseIdleConnections()
		t.Logf("%s: %d requests on a kept-alive connection in %v", path, n, took)
	}
}
