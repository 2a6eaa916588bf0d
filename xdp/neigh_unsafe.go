package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/internal/sys"
)

// Resolver finds the Ethernet address of a peer in the kernel's own route
// and neighbour tables, inside one network namespace, and asks the kernel to
// resolve a neighbour it does not know yet. The kernel keeps owning ARP.
// A Resolver is used by one goroutine at a time.
type Resolver struct {
	fd      int
	ifindex int
	seq     uint32
	buf     []byte
}

// NewResolver opens a netlink socket in namespace ns (empty: the caller's)
// for lookups on interface ifindex.
func NewResolver(ns string, ifindex int) (*Resolver, error) {
	r := &Resolver{fd: -1, ifindex: ifindex, buf: make([]byte, 1<<16)}
	err := sys.InNetns(ns, func() (err error) {
		r.fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("xdp: netlink socket: %w", err)
	}
	if err := unix.Bind(r.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(r.fd)
		return nil, fmt.Errorf("xdp: netlink bind: %w", err)
	}
	return r, nil
}

// Close closes the netlink socket.
func (r *Resolver) Close() error {
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// ErrNoRoute is returned when the route to a peer does not leave through the
// resolver's interface.
var ErrNoRoute = fmt.Errorf("xdp: no route through the interface: %w", unix.EHOSTUNREACH)

// NextHop returns the address to resolve for dst: dst itself on the local
// subnet, or the gateway of the route. The route must be a unicast route
// leaving through the resolver's interface: the kernel's broadcast route to
// the subnet's broadcast address leaves there too, but its neighbour entry
// is ff:ff:ff:ff:ff:ff, and a frame to it reaches every host on the segment.
func (r *Resolver) NextHop(dst netip.Addr) (netip.Addr, error) {
	if !dst.Is4() {
		return netip.Addr{}, fmt.Errorf("xdp: %v is not IPv4: %w", dst, unix.EAFNOSUPPORT)
	}
	msg := r.request(unix.RTM_GETROUTE, unix.NLM_F_REQUEST, unsafe.Sizeof(unix.RtMsg{}))
	rt := (*unix.RtMsg)(unsafe.Pointer(&msg[unix.SizeofNlMsghdr]))
	rt.Family = unix.AF_INET
	rt.Dst_len = 32
	a := dst.As4()
	msg = appendAttr(msg, unix.RTA_DST, a[:])
	hop, oif, typ := dst, 0, uint8(0)
	err := r.roundTrip(msg, func(t uint16, body []byte) {
		if t != unix.RTM_NEWROUTE || len(body) < unix.SizeofRtMsg {
			return
		}
		typ = (*unix.RtMsg)(unsafe.Pointer(&body[0])).Type
		forAttrs(body[unix.SizeofRtMsg:], func(t uint16, v []byte) {
			switch {
			case t == unix.RTA_GATEWAY && len(v) == 4:
				hop = netip.AddrFrom4([4]byte(v))
			case t == unix.RTA_OIF && len(v) == 4:
				oif = int(binary.NativeEndian.Uint32(v))
			}
		})
	})
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
			return netip.Addr{}, ErrNoRoute
		}
		return netip.Addr{}, fmt.Errorf("xdp: route to %v: %w", dst, err)
	}
	if oif != r.ifindex || typ != unix.RTN_UNICAST {
		return netip.Addr{}, ErrNoRoute
	}
	return hop, nil
}

// Neighbour returns the Ethernet address the kernel holds for hop on the
// interface, and whether it holds a usable one.
func (r *Resolver) Neighbour(hop netip.Addr) (mac [6]byte, ok bool, err error) {
	msg := r.request(unix.RTM_GETNEIGH, unix.NLM_F_REQUEST, unix.SizeofNdMsg)
	nd := (*unix.NdMsg)(unsafe.Pointer(&msg[unix.SizeofNlMsghdr]))
	nd.Family = unix.AF_INET
	nd.Ifindex = int32(r.ifindex)
	a := hop.As4()
	msg = appendAttr(msg, unix.NDA_DST, a[:])
	err = r.roundTrip(msg, func(typ uint16, body []byte) {
		if typ != unix.RTM_NEWNEIGH || len(body) < unix.SizeofNdMsg {
			return
		}
		nd := (*unix.NdMsg)(unsafe.Pointer(&body[0]))
		usable := nd.State&(unix.NUD_REACHABLE|unix.NUD_STALE|unix.NUD_DELAY|unix.NUD_PROBE|unix.NUD_PERMANENT|unix.NUD_NOARP) != 0
		forAttrs(body[unix.SizeofNdMsg:], func(t uint16, v []byte) {
			if t == unix.NDA_LLADDR && len(v) == 6 && usable {
				mac, ok = [6]byte(v), true
			}
		})
	})
	if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	return mac, ok, err
}

// Solicit asks the kernel to resolve hop (NTF_USE), as it would before
// sending to it; the answer lands in the neighbour table.
func (r *Resolver) Solicit(hop netip.Addr) error {
	msg := r.request(unix.RTM_NEWNEIGH, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE, unix.SizeofNdMsg)
	nd := (*unix.NdMsg)(unsafe.Pointer(&msg[unix.SizeofNlMsghdr]))
	nd.Family = unix.AF_INET
	nd.Ifindex = int32(r.ifindex)
	nd.State = unix.NUD_NONE
	nd.Flags = unix.NTF_USE
	a := hop.As4()
	msg = appendAttr(msg, unix.NDA_DST, a[:])
	if err := r.roundTrip(msg, func(uint16, []byte) {}); err != nil {
		return fmt.Errorf("xdp: solicit %v: %w", hop, err)
	}
	return nil
}

func (r *Resolver) request(typ uint16, flags uint16, bodyLen uintptr) []byte {
	r.seq++
	msg := make([]byte, unix.SizeofNlMsghdr+int(bodyLen))
	h := (*unix.NlMsghdr)(unsafe.Pointer(&msg[0]))
	h.Type, h.Flags, h.Seq = typ, flags, r.seq
	return msg
}

func appendAttr(msg []byte, typ uint16, v []byte) []byte {
	var a [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(a[0:2], uint16(unix.SizeofRtAttr+len(v)))
	binary.NativeEndian.PutUint16(a[2:4], typ)
	msg = append(msg, a[:]...)
	msg = append(msg, v...)
	for len(msg)%4 != 0 {
		msg = append(msg, 0)
	}
	return msg
}

func forAttrs(b []byte, fn func(typ uint16, v []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:4])&^unix.NLA_F_NESTED, b[unix.SizeofRtAttr:l])
		b = b[min((l+3)&^3, len(b)):]
	}
}

// roundTrip sends msg and hands each reply to fn until the kernel's answer
// is complete; an error reply becomes the returned errno.
func (r *Resolver) roundTrip(msg []byte, fn func(typ uint16, body []byte)) error {
	h := (*unix.NlMsghdr)(unsafe.Pointer(&msg[0]))
	h.Len = uint32(len(msg))
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	for {
		n, _, err := unix.Recvfrom(r.fd, r.buf, 0)
		if err != nil {
			return err
		}
		b := r.buf[:n]
		for len(b) >= unix.SizeofNlMsghdr {
			rh := (*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
			l := int(rh.Len)
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return fmt.Errorf("xdp: malformed netlink reply")
			}
			body := b[unix.SizeofNlMsghdr:l]
			if rh.Seq == h.Seq {
				switch rh.Type {
				case unix.NLMSG_ERROR:
					if len(body) >= 4 {
						if e := int32(binary.NativeEndian.Uint32(body)); e != 0 {
							return unix.Errno(-e)
						}
					}
					return nil
				case unix.NLMSG_DONE:
					return nil
				default:
					fn(rh.Type, body)
					if rh.Flags&unix.NLM_F_MULTI == 0 {
						return nil
					}
				}
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}
