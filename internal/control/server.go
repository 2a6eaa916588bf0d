package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
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

// Handler answers a request; it runs on the server's goroutine.
type Handler func(cmd string) Reply

// Server is one stack's control socket. Its goroutine (routineServe)
// accepts and answers one client at a time; Close stops it from any
// goroutine.
type Server struct {
	path string
	ln   *net.UnixListener
	h    Handler
	uid  int
	done chan struct{}
	once sync.Once
}

// seq numbers the control sockets of this process.
var seq atomic.Int64

// ioTimeout bounds one client's request and reply: a client that stalls
// does not hold the socket.
const ioTimeout = 2 * time.Second

// Listen creates the control socket in dir (DefaultDir if empty), after
// removing the sockets of dead processes there, and serves h on it.
func Listen(dir string, h Handler) (*Server, error) {
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
	s := &Server{path: path, ln: ln, h: h, uid: os.Geteuid(), done: make(chan struct{})}
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
		err = s.ln.Close()
		<-s.done
	})
	return err
}

func (s *Server) routineServe() {
	defer close(s.done)
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // out of fds, say: do not spin
			continue
		}
		s.serve(c)
	}
}

func (s *Server) serve(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	// The request is read first, so that a refused client gets the
	// refusal, not a broken pipe on its write.
	var r Reply
	var req Request
	line, err := bufio.NewReader(c).ReadBytes('\n')
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
	case req.Cmd != CmdStack && req.Cmd != CmdConns && req.Cmd != CmdCounters:
		r.Error = fmt.Sprintf("unknown command %q", req.Cmd)
	default:
		r = s.h(req.Cmd)
	}
	b, _ := json.Marshal(r)
	c.Write(append(b, '\n'))
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
