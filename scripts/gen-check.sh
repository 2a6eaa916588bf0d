#!/usr/bin/env bash
# gen-check.sh: fail when the committed bpf2go output in bpf/ (*_bpfel.go,
# *_bpfel.o) no longer matches the C sources next to it.
#
#   working tree           $tmp/1 and $tmp/2 (copies)
#   go.mod go.sum  ──cp──▶ go.mod go.sum
#   bpf/ sources   ──cp──▶ bpf/ without *_bpfel.*  ── go generate ./bpf ──▶ *_bpfel.*
#
# It generates twice, in two directories with different paths, with the same
# //go:generate line `make generate` runs (pinned clang-14 and llvm-strip-14),
# then checks that
#   1. the two runs agree byte for byte (generation is deterministic), and
#   2. they agree with the files in the working tree, which git tracks.
# The working tree is never written to.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

missing=()
for tool in clang-14 llvm-strip-14 go; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
	echo "gen-check: missing ${missing[*]}." >&2
	echo "gen-check: the eBPF objects are built with the pinned clang-14 from Debian 12:" >&2
	echo "gen-check:     apt-get install clang-14 llvm-14" >&2
	exit 2
fi

# Only the //go:generate line decides how to build.
unset BPF2GO_CC BPF2GO_STRIP BPF2GO_CFLAGS BPF2GO_MAKEBASE

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sdx-gen-check.$$.XXXXXX")
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

generate() {
	local dir=$1
	mkdir -p "$dir"
	cp go.mod go.sum "$dir/"
	cp -R bpf "$dir/bpf"
	rm -f "$dir"/bpf/*_bpfel.go "$dir"/bpf/*_bpfel.o
	if ! (cd "$dir" && go generate ./bpf) >"$dir.log" 2>&1; then
		cat "$dir.log" >&2
		echo "gen-check: go generate ./bpf failed (clang: $(clang-14 --version | head -n1))" >&2
		exit 1
	fi
}

generate "$tmp/1"
generate "$tmp/2"

status=0
mapfile -t gen1 < <(cd "$tmp/1/bpf" && ls -1 -- *_bpfel.go *_bpfel.o 2>/dev/null)
if ((${#gen1[@]} == 0)); then
	echo "gen-check: go generate ./bpf produced no *_bpfel.go or *_bpfel.o" >&2
	exit 1
fi

for f in "${gen1[@]}"; do
	if ! cmp -s "$tmp/1/bpf/$f" "$tmp/2/bpf/$f"; then
		echo "gen-check: bpf/$f differs between two runs: generation is not deterministic" >&2
		status=1
	fi
done
if ((status)); then
	exit 1
fi

for f in "${gen1[@]}"; do
	if [[ ! -e bpf/$f ]]; then
		echo "gen-check: bpf/$f is missing: run 'make generate' and commit it" >&2
		status=1
	elif ! cmp -s "$tmp/1/bpf/$f" "bpf/$f"; then
		echo "gen-check: bpf/$f does not match its C source: run 'make generate' and commit it" >&2
		status=1
	elif ! git ls-files --error-unmatch "bpf/$f" >/dev/null 2>&1; then
		echo "gen-check: bpf/$f is not tracked by git: git add it (.gitignore must except it)" >&2
		status=1
	fi
done

# Generated files whose source is gone.
for f in bpf/*_bpfel.go bpf/*_bpfel.o; do
	[[ -e $f ]] || continue
	if [[ ! -e $tmp/1/$f ]]; then
		echo "gen-check: $f is no longer generated: remove it" >&2
		status=1
	fi
done

if ((status == 0)); then
	echo "gen-check: bpf/ generated output is up to date ($(clang-14 --version | head -n1))"
fi
exit "$status"
