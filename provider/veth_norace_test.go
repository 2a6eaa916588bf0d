//go:build !race

package provider

// Transfer sizes of the veth tests without the race detector.
const vethEchoBytes = 1 << 30

// vethCloseSeeds is how many interleavings TestVethConcurrentClose runs.
const vethCloseSeeds = 1000
