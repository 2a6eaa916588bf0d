package sys

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// SetCongestion sets the TCP congestion control of the socket behind c
// (TCP_CONGESTION), for instance "cubic": a socket may pick any algorithm
// the kernel has, whatever the namespace's default (which a child
// namespace cannot change).
func SetCongestion(c syscall.RawConn, name string) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("TCP_CONGESTION %s: %w", name, serr)
	}
	return nil
}

// TCPCounters returns the kernel's count of the segments the socket
// behind c retransmitted, and of the data segments it sent (TCP_INFO),
// with the name of its congestion control.
func TCPCounters(c syscall.RawConn) (retrans, dataOut uint64, cc string, err error) {
	var serr error
	if err := c.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); serr == nil {
			retrans, dataOut = uint64(info.Total_retrans), uint64(info.Data_segs_out)
		}
		if serr == nil {
			cc, serr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		}
	}); err != nil {
		return 0, 0, "", err
	}
	return retrans, dataOut, cc, serr
}
