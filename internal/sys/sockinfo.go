package sys

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// PeerUID returns the user id of the process at the other end of a
// connected Unix socket (SO_PEERCRED), as the kernel recorded it at
// connect time.
func PeerUID(c syscall.Conn) (uint32, error) {
	var uid uint32
	err := control(c, func(fd int) error {
		cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err == nil {
			uid = cred.Uid
		}
		return err
	})
	return uid, err
}

// TCPFigures are what the kernel reports about one TCP socket.
type TCPFigures struct {
	State        uint8  // TCP_ESTABLISHED (1), ... as in the kernel
	RecvQ, SendQ int    // bytes not yet read, bytes not yet acknowledged (SIOCINQ, SIOCOUTQ)
	RTT, RTTVar  uint32 // microseconds
	Retransmits  uint32 // segments retransmitted over the connection's life
	BytesAcked   uint64
	BytesRecv    uint64
	ECN          bool // both ends agreed on ECN at the handshake
}

// tcpiOptECN is TCPI_OPT_ECN of <linux/tcp.h>, a bit of tcpi_options.
const tcpiOptECN = 0x08

// TCPInfo reads a kernel TCP socket's queues and TCP_INFO.
func TCPInfo(c syscall.Conn) (TCPFigures, error) {
	var f TCPFigures
	err := control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		f.State, f.RTT, f.RTTVar, f.Retransmits = ti.State, ti.Rtt, ti.Rttvar, ti.Total_retrans
		f.BytesAcked, f.BytesRecv = ti.Bytes_acked, ti.Bytes_received
		f.ECN = ti.Options&tcpiOptECN != 0
		if f.RecvQ, err = unix.IoctlGetInt(fd, unix.SIOCINQ); err != nil {
			return err
		}
		f.SendQ, err = unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		return err
	})
	return f, err
}

func control(c syscall.Conn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// ProcessAlive reports whether a process with the given id exists (in
// the caller's pid namespace).
func ProcessAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
