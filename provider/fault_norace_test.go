//go:build !race

package provider

// lossCases are the loss rates of TestFaultLossTransfer and the bytes
// moved through each without the race detector: issue 7's 256 MiB at
// every rate (about 30 s in all on the 2-core test machine, 23 s of it at
// 20%; -short moves 8 MiB each).
func lossCases() []lossCase {
	return []lossCase{{0.01, 256 << 20}, {0.05, 256 << 20}, {0.2, 256 << 20}}
}
