// Package sys holds the raw system calls sdx makes outside xdp/: entering
// network namespaces, pinning threads and reading CPU time, and the
// non-blocking kernel sockets the benchmark's reference systems spin on,
// and what the control socket asks the kernel about sockets and processes.
// Everything else reaches the kernel through xdp/ or the standard library.
package sys
