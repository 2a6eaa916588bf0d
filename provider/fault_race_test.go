//go:build race

package provider

// lossCases are the loss rates of TestFaultLossTransfer and the bytes
// moved through each under the race detector, which slows the data path
// about tenfold (see fault_norace_test.go for the sizes at high loss).
func lossCases() []lossCase {
	return []lossCase{{0.01, 16 << 20}, {0.05, 4 << 20}, {0.2, 1 << 20}}
}
