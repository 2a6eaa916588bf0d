//go:build race

package provider

// raceOn is true under the race detector, which slows the data path about
// tenfold: the long stream tests move less data under it (make test runs
// the full sizes without it).
const raceOn = true
