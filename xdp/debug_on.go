//go:build sdxdebug

package xdp

const debug = true
