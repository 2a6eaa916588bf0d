package sys

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// NetnsDir is where iproute2 keeps the handles of named namespaces.
const NetnsDir = "/run/netns"

// NetnsPath returns the handle path of the named namespace. An empty name,
// or one starting with '/', is returned as is.
func NetnsPath(name string) string {
	if name == "" || name[0] == '/' {
		return name
	}
	return NetnsDir + "/" + name
}

// InNetns runs fn on a locked OS thread inside the named namespace (a name
// under /run/netns, or a path). An empty name runs fn in the current
// namespace. Sockets and links created by fn stay in that namespace after
// InNetns returns.
func InNetns(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	target, err := os.Open(NetnsPath(name))
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	// A fresh goroutine so the caller's thread never changes namespace; if
	// restoring fails, the goroutine exits still locked and the runtime
	// retires the thread instead of reusing it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- fmt.Errorf("netns: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: setns: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netns: restore: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// NetnsExists reports whether the named namespace has a handle.
func NetnsExists(name string) bool {
	_, err := os.Stat(NetnsPath(name))
	return err == nil
}
