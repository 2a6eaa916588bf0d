//go:build race

package ring

// stressItems is how many items each stress test moves through a ring
// outside -short mode. Under the race detector ten million take up to two
// minutes per test on two cores, so the race build moves two million.
const stressItems = 2_000_000
