// Package sys holds the raw system calls sdx makes outside xdp/: entering
// network namespaces, pinning threads and reading CPU time, and the
// non-blocking kernel sockets the benchmark's reference systems spin on,
// what the control socket asks the kernel about sockets and processes,
// and the socket pair that stands in for an sdx connection's descriptor
// in a connection pool's health check.
// Everything else reaches the kernel through xdp/ or the standard library.
package sys
