package sdx

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/sdx-project/sdx/internal/control"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// DefaultControlDir is where a stack serves its control socket, as
// <pid>-<n>.sock, unless Config.ControlDir says otherwise.
const DefaultControlDir = control.DefaultDir

// startControl serves the stack's control socket, unless the
// configuration turns it off. A stack whose socket cannot be made (no
// right to create DefaultControlDir, say) runs without it:
// ControlErr says why.
func (s *Stack) startControl() {
	if s.cfg.NoControl {
		return
	}
	s.ctl, s.ctlErr = control.Listen(s.cfg.ControlDir, s.controlReply, s.captureStream)
}

// ControlPath returns the path of the stack's control socket, which
// `sdx stat` reads; empty when it has none (Config.NoControl, or see
// ControlErr).
func (s *Stack) ControlPath() string {
	if s.ctl == nil {
		return ""
	}
	return s.ctl.Path()
}

// ControlErr returns why the stack has no control socket although
// Config.NoControl is false; nil otherwise.
func (s *Stack) ControlErr() error { return s.ctlErr }

// trackTCP records an open kernel TCP connection of the stack, for
// `sdx stat conns`.
func (s *Stack) trackTCP(c *Conn) {
	c.ts = s
	s.tcpMu.Lock()
	s.tcpConns[c] = struct{}{}
	s.tcpMu.Unlock()
}

func (s *Stack) untrackTCP(c *Conn) {
	s.tcpMu.Lock()
	delete(s.tcpConns, c)
	s.tcpMu.Unlock()
}

// controlReply answers a control request; it runs on the control
// socket's goroutine. The provider's figures come from its poller
// (provider.ConnStats), so nothing here touches the data path.
func (s *Stack) controlReply(cmd string) control.Reply {
	var r control.Reply
	st := s.Stats()
	var conns []provider.ConnStats
	for _, sh := range s.shards {
		cs, err := sh.p.ConnStats()
		if err != nil {
			return control.Reply{Error: err.Error()}
		}
		conns = append(conns, cs...)
	}
	tcps := s.tcpList()
	r.Stack = s.describe(st, conns, len(tcps))
	switch cmd {
	case control.CmdConns:
		r.Conns = make([]control.Conn, 0, len(conns)+len(tcps))
		for i := range conns {
			c := &conns[i]
			r.Conns = append(r.Conns, control.Conn{
				Path: string(PathSDX), State: c.State, Local: c.Local, Peer: c.Peer,
				RecvQ: c.RecvQ, SendQ: c.SendQ, SDX: c,
			})
		}
		for _, c := range tcps {
			r.Conns = append(r.Conns, tcpRow(c))
		}
	case control.CmdCounters:
		r.Counters = &control.Counters{Provider: st, Link: s.LinkStats(), Fallbacks: s.fallbackNames()}
	}
	return r
}

func (s *Stack) tcpList() []*Conn {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	out := make([]*Conn, 0, len(s.tcpConns))
	for c := range s.tcpConns {
		out = append(out, c)
	}
	return out
}

func (s *Stack) fallbackNames() map[string]uint64 {
	m := make(map[string]uint64)
	for f, n := range s.Fallbacks() {
		m[f.String()] = n
	}
	return m
}

func (s *Stack) describe(st provider.Stats, conns []provider.ConnStats, tcp int) *control.Stack {
	ls := s.LinkStats()
	d := &control.Stack{
		PID: os.Getpid(), Socket: s.ControlPath(), Netns: s.cfg.Netns, Interface: s.cfg.Interface,
		Addr: s.addr, Prefix: s.prefix, Port: s.cfg.Port, MTU: st.MTU,
		XDPFrags: ls.XDPFrags, XDPFallback: ls.XDPFallback, MultiBuffer: ls.MultiBuffer,
		PollMode: s.pollMode.String(), Pollers: len(s.shards), TCPConns: tcp, Fallbacks: s.fallbackNames(),
		Queues: []control.Queue{},
	}
	if d.Port == 0 {
		d.Port = provider.DefaultUDPPort
	}
	if ls.XDPMode != 0 {
		d.XDPMode = ls.XDPMode.String()
	}
	for _, q := range ls.Queues {
		d.Queues = append(d.Queues, control.Queue{ID: q.ID, Mode: q.Mode.String(), ZeroCopyRefused: q.ZeroCopyRefused})
	}
	if s.xl != nil {
		d.Capturing, d.CaptureFrames, d.CaptureDropped = s.xl.CaptureState()
	}
	for _, c := range conns {
		if c.Peer.IsValid() {
			d.Conns++
		} else if c.State == "Listening" {
			d.Listeners++
		}
	}
	return d
}

// tcpRow describes a kernel TCP connection from the kernel's figures.
func tcpRow(c *Conn) control.Conn {
	row := control.Conn{Path: string(PathTCP), State: "Closed", Fallback: c.why.String()}
	if a, ok := c.tcp.LocalAddr().(*net.TCPAddr); ok {
		row.Local = a.AddrPort()
	}
	if a, ok := c.tcp.RemoteAddr().(*net.TCPAddr); ok {
		row.Peer = a.AddrPort()
	}
	row.Local = netip.AddrPortFrom(row.Local.Addr().Unmap(), row.Local.Port())
	row.Peer = netip.AddrPortFrom(row.Peer.Addr().Unmap(), row.Peer.Port())
	if f, err := sys.TCPInfo(c.tcp); err == nil {
		row.State = tcpStateName(f.State)
		row.RecvQ, row.SendQ = f.RecvQ, f.SendQ
		row.TCP = &control.TCPInfo{RTTMicros: f.RTT, RTTVarMicros: f.RTTVar, Retransmits: f.Retransmits,
			BytesAcked: f.BytesAcked, BytesRecv: f.BytesRecv}
	}
	return row
}

// tcpStateName names the kernel's TCP states (include/net/tcp_states.h)
// as the provider names its own where they match.
func tcpStateName(s uint8) string {
	names := [...]string{1: "Established", 2: "SynSent", 3: "SynRecv", 4: "FinWait1", 5: "FinWait2",
		6: "TimeWait", 7: "Closed", 8: "CloseWait", 9: "LastAck", 10: "Listening", 11: "Closing"}
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return "Unknown"
}

// captureStream serves `sdx capture`: it records the frames the stack's
// link sends and receives and writes them to w as a pcap file (link type
// Ethernet, microseconds) until done, or a write fails.
func (s *Stack) captureStream(req control.Request, w io.Writer, done <-chan struct{}) error {
	reply := func(r control.Reply) error {
		b, _ := json.Marshal(r)
		_, err := w.Write(append(b, '\n'))
		return err
	}
	if s.xl == nil {
		return reply(control.Reply{Error: "this stack's link records no frames (only an AF_XDP link does)"})
	}
	if len(s.shards) > 1 {
		return reply(control.Reply{Error: "capture records one poller's queues; this stack has several (Config.Pollers)"})
	}
	c, err := s.xl.StartCapture(0, req.Snaplen)
	if err != nil {
		return reply(control.Reply{Error: err.Error()})
	}
	defer c.Stop()
	if err := reply(control.Reply{}); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	snaplen := req.Snaplen
	if snaplen <= 0 {
		snaplen = xdplink.DefaultCaptureSnaplen
	}
	var hdr [24]byte
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4) // microsecond timestamps
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], uint32(snaplen))
	binary.LittleEndian.PutUint32(hdr[20:], 1) // LINKTYPE_ETHERNET
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	idle := time.NewTicker(time.Millisecond)
	defer idle.Stop()
	for {
		f, ok := c.Next()
		if !ok {
			if err := bw.Flush(); err != nil {
				return err
			}
			select {
			case <-done:
				c.Release()
				return nil
			case <-idle.C:
			}
			continue
		}
		var rec [16]byte
		binary.LittleEndian.PutUint32(rec[0:], uint32(f.Time.Unix()))
		binary.LittleEndian.PutUint32(rec[4:], uint32(f.Time.Nanosecond()/1000))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(f.Data)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(f.Len))
		bw.Write(rec[:])
		if _, err := bw.Write(f.Data); err != nil {
			c.Release()
			return err
		}
	}
}
