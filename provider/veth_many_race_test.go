//go:build race

package provider

import "time"

// TestVethManyConnections under the race detector, which slows the data
// path about tenfold: fewer and shorter streams.
const (
	vethManyConns   = 200
	vethManyBytes   = 256 << 10
	vethManyTimeout = 45 * time.Second
)
