//go:build race

package provider

// lossCases are the loss rates of TestFaultLossTransfer and the bytes
// moved through each under the race detector, which slows the data path
// about tenfold.
func lossCases() []lossCase {
	return []lossCase{{0.01, 32 << 20}, {0.05, 32 << 20}, {0.2, 4 << 20}}
}
