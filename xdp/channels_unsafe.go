package xdp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/internal/sys"
)

// ethtoolChannels is struct ethtool_channels.
type ethtoolChannels struct {
	cmd                                         uint32
	maxRx, maxTx, maxOther, maxCombined         uint32
	rxCount, txCount, otherCount, combinedCount uint32
}

// ifreqData is struct ifreq with its union as a pointer.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte // the rest of the union
}

// RxQueues returns how many rx queues an AF_XDP socket may bind to on
// the interface inside netns: the driver's rx and combined channels
// (ETHTOOL_GCHANNELS). veth reports its rx queues, most NICs their
// combined channels. A driver that answers nothing has one.
func RxQueues(netns, ifname string) (int, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, configErr("interface name %q is too long", ifname)
	}
	n := 1
	err := sys.InNetns(netns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("xdp: socket: %w", err)
		}
		defer unix.Close(fd)
		ch := ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
		var ifr ifreqData
		copy(ifr.name[:], ifname)
		ifr.data = unsafe.Pointer(&ch)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		switch errno {
		case 0:
		case unix.EOPNOTSUPP:
			return nil // no channels to report: one queue
		case unix.ENODEV:
			return fmt.Errorf("xdp: interface %q: %w", ifname, errno)
		default:
			return fmt.Errorf("xdp: channels of %s: %w", ifname, errno)
		}
		n = max(int(ch.rxCount+ch.combinedCount), 1)
		return nil
	})
	return n, err
}
