//go:build !race

package ring

// stressItems is how many items each stress test moves through a ring
// outside -short mode.
const stressItems = 10_000_000
