//go:build !race

package provider

import "time"

// TestVethManyConnections without the race detector: the 1000
// connections of 1 MiB each.
const (
	vethManyConns   = 1000
	vethManyBytes   = 1 << 20
	vethManyTimeout = 45 * time.Second
)
