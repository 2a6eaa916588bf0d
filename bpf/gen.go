package bpf

// The pinned toolchain is clang-14 and llvm-strip-14 from Debian 12
// (apt-get install clang-14 llvm-14). The headers come from
// include/ only (-nostdinc), so the output does not depend on what else is
// installed. scripts/gen-check.sh fails when the committed output is stale.
//
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -nostdinc -Iinclude" -target bpfel -type counters steer steer.c
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -nostdinc -Iinclude" -target bpfel -type counters -type config -type rng_state fault fault.c
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -nostdinc -Iinclude" -target bpfel -type counters -type config -type rng_state disorder disorder.c
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -nostdinc -Iinclude" -target bpfel -type counters -type config -type vqueue mark mark.c
