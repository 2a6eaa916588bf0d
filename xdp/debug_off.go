//go:build !sdxdebug

package xdp

// debug turns on per-transition checks of frame places; build with
// -tags sdxdebug to catch a frame in two places where it happens.
const debug = false
