package xdp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf/link"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/sys"
)

// Steering is the steer program attached to one interface: it sends frames
// to the sdx UDP port of the addresses it serves, and ICMP port
// unreachables about frames sent from them, into the AF_XDP queues
// registered with it, drops such frames from sources nobody may answer
// (broadcast, multicast, the host's own addresses; see bpf's doc), and
// hands every other frame to the kernel.
//
// The attachment is a bpf_link owned by this process: if the process dies,
// even by SIGKILL, the kernel detaches the program. Methods may be called
// from any goroutine.
type Steering struct {
	prog    *bpf.Steer
	link    link.Link
	mode    bpf.Mode
	frags   bool   // the attached program is frags-aware
	why     string // why not frags-aware native XDP; "" when it is
	ifindex int
	ifname  string
}

// SteerConfig says where to attach and which UDP port is sdx's.
type SteerConfig struct {
	Netns     string // namespace name or path; empty for the caller's
	Interface string // interface inside Netns
	Port      uint16 // UDP destination port of sdx frames
	// Mode forces native or generic XDP; zero tries native first and falls
	// back to generic.
	Mode bpf.Mode
	// Serve lists the interface's IPv4 addresses whose sdx frames are
	// steered; empty: all of them. sdx frames to the interface's other
	// addresses, to broadcast and multicast addresses, and to other hosts
	// go to the kernel. The interface's addresses as they are at attach
	// time are the ones the program knows.
	Serve []netip.Addr
	// AnyAddr steers sdx frames to any destination: for a raw test host
	// that reads frames addressed to others, never for a stack.
	AnyAddr bool
}

// AttachSteer loads the steer program for c.Port and attaches it to
// c.Interface inside c.Netns.
func AttachSteer(c SteerConfig) (_ *Steering, err error) {
	if c.Interface == "" {
		return nil, configErr("SteerConfig.Interface is empty")
	}
	if c.Port == 0 {
		return nil, configErr("SteerConfig.Port is 0; pick the sdx UDP port")
	}
	prog, err := bpf.LoadSteer(c.Port)
	if err != nil {
		return nil, err
	}
	s := &Steering{prog: prog, ifname: c.Interface}
	defer func() {
		if err != nil {
			prog.Close()
		}
	}()
	err = sys.InNetns(c.Netns, func() error {
		ifi, err := net.InterfaceByName(c.Interface)
		if err != nil {
			return fmt.Errorf("xdp: interface %q: %w", c.Interface, err)
		}
		s.ifindex = ifi.Index
		if err := steerAddrs(prog, ifi, c); err != nil {
			return err
		}
		return s.attach(ifi.Index, c.Mode)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// attach tries the modes in order (mode alone when forced), and in each
// the frags-aware program before the plain one, and records why it settled
// for less than frags-aware native XDP.
func (s *Steering) attach(ifindex int, mode bpf.Mode) error {
	modes := []bpf.Mode{bpf.ModeNative, bpf.ModeGeneric}
	if mode != 0 {
		modes = []bpf.Mode{mode}
	}
	var why []string
	if err := s.prog.FragsErr(); err != nil {
		why = append(why, err.Error())
	}
	if mode == bpf.ModeGeneric {
		why = append(why, "generic XDP forced by configuration")
	}
	var errs []error
	for _, m := range modes {
		for _, p := range s.prog.Programs() {
			l, got, err := bpf.Attach(p, ifindex, m)
			if err == nil {
				s.link, s.mode, s.frags = l, got, s.prog.IsFrags(p)
				s.why = strings.Join(why, "; ")
				return nil
			}
			errs = append(errs, err)
			if !bpf.Refused(err) {
				return errors.Join(errs...)
			}
			kind := "plain program"
			if s.prog.IsFrags(p) {
				kind = "frags-aware program"
			}
			why = append(why, kind+": "+err.Error())
		}
	}
	return errors.Join(errs...)
}

// steerAddrs tells prog the interface's IPv4 addresses, marking those
// c.Serve names (all, if it is empty) as served.
func steerAddrs(prog *bpf.Steer, ifi *net.Interface, c SteerConfig) error {
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("xdp: addresses of %s: %w", c.Interface, err)
	}
	found := 0
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || !p.Addr().Is4() {
			continue
		}
		serve := len(c.Serve) == 0
		for _, want := range c.Serve {
			if want == p.Addr() {
				serve = true
				found++
			}
		}
		if err := prog.AddAddr(p, serve); err != nil {
			return fmt.Errorf("xdp: %s: %w", c.Interface, err)
		}
	}
	if found < len(c.Serve) {
		return configErr("SteerConfig.Serve %v: not all are IPv4 addresses of %s", c.Serve, c.Interface)
	}
	if c.AnyAddr {
		if err := prog.AddAddr(bpf.AnyAddr, true); err != nil {
			return fmt.Errorf("xdp: %s: %w", c.Interface, err)
		}
	}
	return nil
}

// Mode reports whether the kernel granted native or generic XDP.
func (s *Steering) Mode() bpf.Mode { return s.mode }

// Frags reports whether the attached program is frags-aware, so that the
// driver may hand it frames in several buffers (and veth takes native XDP
// at MTUs above a page).
func (s *Steering) Frags() bool { return s.frags }

// Fallback says why the steering is not frags-aware native XDP: the
// errors of the attempts that were refused, or the configuration that
// forced generic mode. It is empty when nothing fell back.
func (s *Steering) Fallback() string { return s.why }

// Register steers the queue's frames to q's socket.
func (s *Steering) Register(q *Queue) error {
	if err := s.prog.Register(q.cfg.Queue, q.FD()); err != nil {
		return fmt.Errorf("xdp: register queue %d on %s: %w", q.cfg.Queue, s.ifname, err)
	}
	return nil
}

// Unregister stops steering to queue id; frames for it go to the kernel.
func (s *Steering) Unregister(queue int) error {
	return s.prog.Unregister(queue)
}

// Stats returns the program's counters, summed over CPUs.
func (s *Steering) Stats() (bpf.SteerStats, error) { return s.prog.Stats() }

// Close detaches the program and releases it.
func (s *Steering) Close() error {
	var errs []error
	if s.link != nil {
		errs = append(errs, s.link.Close())
		s.link = nil
	}
	if s.prog != nil {
		errs = append(errs, s.prog.Close())
		s.prog = nil
	}
	return errors.Join(errs...)
}
