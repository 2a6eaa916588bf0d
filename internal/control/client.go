package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"time"
)

// Sockets returns the control sockets in dir (DefaultDir if empty) of
// live processes, by pid then number; pid, if not 0, keeps only that
// process's. Sockets of dead processes are removed on the way.
func Sockets(dir string, pid int) []string {
	if dir == "" {
		dir = DefaultDir
	}
	RemoveStale(dir)
	var out []string
	for _, p := range socketFiles(dir) {
		if q, ok := pidOf(p); ok && (pid == 0 || q == pid) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := pidOf(out[i])
		b, _ := pidOf(out[j])
		if a != b {
			return a < b
		}
		return len(out[i]) < len(out[j]) || len(out[i]) == len(out[j]) && out[i] < out[j]
	})
	return out
}

// Query sends one request to the control socket at path and returns the
// reply; a refusal is an error.
func Query(path, cmd string) (*Reply, error) {
	c, err := net.DialTimeout("unix", path, ioTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	b, _ := json.Marshal(Request{Cmd: cmd})
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("%s: %w", path, errors.New(r.Error))
	}
	return &r, nil
}

// Capture asks the stack at path for a capture and returns the pcap
// stream; closing it ends the capture.
func Capture(path string, snaplen int) (io.ReadCloser, error) {
	c, err := net.DialTimeout("unix", path, ioTimeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	b, _ := json.Marshal(Request{Cmd: CmdCapture, Snaplen: snaplen})
	rd := bufio.NewReader(c)
	var r Reply
	line, err := []byte(nil), error(nil)
	if _, err = c.Write(append(b, '\n')); err == nil {
		if line, err = rd.ReadBytes('\n'); err == nil {
			err = json.Unmarshal(line, &r)
		}
	}
	if err == nil && r.Error != "" {
		err = errors.New(r.Error)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.SetDeadline(time.Time{})
	return &stream{Reader: rd, c: c}, nil
}

type stream struct {
	*bufio.Reader
	c net.Conn
}

func (s *stream) Close() error { return s.c.Close() }
