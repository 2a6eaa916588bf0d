//go:build race

package provider

// The race detector slows the data path about tenfold; the veth tests move
// less data under it and the full amounts without it.
const vethEchoBytes = 64 << 20

// vethCloseSeeds is how many interleavings TestVethConcurrentClose runs.
const vethCloseSeeds = 200
