//go:build !race

package provider

// lossCases are the loss rates of TestFaultLossTransfer and the bytes
// moved through each without the race detector. Issue 7 moved 256 MiB at
// every rate; with a congestion window, random loss halves the window as
// congestion would, as TCP's does, and at 20% the timer's restarts from
// one segment leave about 0.4 MB/s (8 MiB took 19 s on the 2-core test
// machine), so the higher rates move less. -short moves at most 8 MiB.
func lossCases() []lossCase {
	return []lossCase{{0.01, 64 << 20}, {0.05, 16 << 20}, {0.2, 2 << 20}}
}
