package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
)

// Handler answers a request; it runs on the client's goroutine.
type Handler func(cmd string) Reply

// Streamer serves CmdCapture: it writes the reply line and then the
// stream to w until done is closed (the client went away, or the server
// closes) or a write fails. Nil: the server refuses CmdCapture.
type Streamer func(req Request, w io.Writer, done <-chan struct{}) error

// Server is one stack's control socket. Its goroutine (routineServe)
// accepts clients and serves each on a goroutine of its own
// (routineClient), at most maxClients at a time; Close stops them all from
// any goroutine.
type Server struct {
	path   string
	ln     *net.UnixListener
	h      Handler
	stream Streamer
	uid    int
	done   chan struct{} // closed when routineServe returns
	quit   chan struct{} // closed by Close: streams end
	once   sync.Once

	mu      sync.Mutex // protects clients
	clients map[*net.UnixConn]struct{}
	wg      sync.WaitGroup // client goroutines
}

// maxClients bounds the clients served at once; more wait to be accepted.
const maxClients = 8

// seq numbers the control sockets of this process.
var seq atomic.Int64

// ioTimeout bounds one client's request and reply: a client that stalls
// does not hold the socket.
const ioTimeout = 2 * time.Second

// Listen creates the control socket in dir (DefaultDir if empty), after
// removing the sockets of dead processes there, and serves h on it.
func Listen(dir string, h Handler, stream Streamer) (*Server, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	RemoveStale(dir)
	path := filepath.Join(dir, fmt.Sprintf("%d-%d.sock", os.Getpid(), seq.Add(1)))
	os.Remove(path) // a socket of an earlier process that had our pid
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	// A client that connects before the chmod is still checked by uid.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{path: path, ln: ln, h: h, stream: stream, uid: os.Geteuid(),
		done: make(chan struct{}), quit: make(chan struct{}), clients: make(map[*net.UnixConn]struct{})}
	go s.routineServe()
	return s, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops serving and removes the socket; it waits for the server's
// goroutine. It is idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.quit)
		err = s.ln.Close()
		<-s.done
		s.mu.Lock()
		for c := range s.clients {
			c.SetDeadline(time.Now()) // a blocked read or write returns
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

func (s *Server) routineServe() {
	defer close(s.done)
	sem := make(chan struct{}, maxClients)
	for {
		select {
		case sem <- struct{}{}:
		case <-s.quit:
			return
		}
		c, err := s.ln.AcceptUnix()
		if err != nil {
			<-sem
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // out of fds, say: do not spin
			continue
		}
		s.mu.Lock()
		s.clients[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.routineClient(c, sem)
	}
}

func (s *Server) routineClient(c *net.UnixConn, sem chan struct{}) {
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
		c.Close()
		<-sem
		s.wg.Done()
	}()
	s.serve(c)
}

func (s *Server) serve(c *net.UnixConn) {
	c.SetDeadline(time.Now().Add(ioTimeout))
	// The request is read first, so that a refused client gets the
	// refusal, not a broken pipe on its write.
	var r Reply
	var req Request
	rd := bufio.NewReader(c)
	line, err := rd.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	uid, uerr := sys.PeerUID(c)
	switch {
	case uerr != nil:
		r.Error = fmt.Sprintf("cannot tell who is asking: %v", uerr)
	case uid != 0 && int(uid) != s.uid:
		r.Error = fmt.Sprintf("permission denied: uid %d may not read a stack of uid %d", uid, s.uid)
	case err != nil:
		r.Error = fmt.Sprintf("bad request: %v", err)
	case req.Cmd == CmdCapture && s.stream != nil:
		s.serveStream(c, rd, req)
		return
	case req.Cmd != CmdStack && req.Cmd != CmdConns && req.Cmd != CmdCounters:
		r.Error = fmt.Sprintf("unknown command %q", req.Cmd)
	default:
		r = s.h(req.Cmd)
	}
	b, _ := json.Marshal(r)
	c.Write(append(b, '\n'))
}

// serveStream runs the streamer until the client closes its side (its
// next read ends), the server closes, or a write fails.
func (s *Server) serveStream(c *net.UnixConn, rd *bufio.Reader, req Request) {
	c.SetDeadline(time.Time{})
	done := make(chan struct{})
	gone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, rd) // until the client closes, or Close's deadline
		close(gone)
	}()
	go func() {
		select {
		case <-gone:
		case <-s.quit:
		}
		close(done)
	}()
	s.stream(req, c, done)
	c.CloseWrite()
	// Wait for the reader: the client closes its side once it sees our
	// end; a client that does not is cut off.
	limit := time.Now().Add(ioTimeout)
	select {
	case <-s.quit:
		limit = time.Now()
	default:
	}
	c.SetReadDeadline(limit)
	<-gone
	<-done
}

// RemoveStale removes the control sockets in dir whose process is gone.
func RemoveStale(dir string) {
	for _, p := range socketFiles(dir) {
		if pid, ok := pidOf(p); ok && !sys.ProcessAlive(pid) {
			os.Remove(p)
		}
	}
}

func socketFiles(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*-*.sock"))
	return m
}

// pidOf reads the pid from a socket's name, <pid>-<n>.sock.
func pidOf(path string) (int, bool) {
	name := strings.TrimSuffix(filepath.Base(path), ".sock")
	i := strings.IndexByte(name, '-')
	if i <= 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(name[:i])
	if _, err2 := strconv.Atoi(name[i+1:]); err != nil || err2 != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}
