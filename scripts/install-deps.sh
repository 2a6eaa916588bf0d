#!/usr/bin/env bash
# Installs what sdx's build, tests and demo need on Debian 12 (run as root):
#   iproute2       ip(8) for the netns/veth testbed
#   iputils-ping   ping(8), to prove ICMP still works with XDP attached
#   clang-14, llvm the pinned eBPF compiler and llvm-strip-14, for make generate
#                  and the check that the committed objects match their source
#   tshark         the test that decodes an `sdx capture` with the Wireshark
#                  dissector in tools/wireshark
# Go itself must already be installed; Go tools (bpf2go) come from go.mod.
set -euo pipefail

pkgs=()
command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
command -v ping >/dev/null 2>&1 || pkgs+=(iputils-ping)
if [ "${1:-}" != "--runtime" ]; then
	command -v clang-14 >/dev/null 2>&1 || pkgs+=(clang-14)
	command -v llvm-strip-14 >/dev/null 2>&1 || pkgs+=(llvm)
	command -v tshark >/dev/null 2>&1 || pkgs+=(tshark)
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing ${pkgs[*]}; run as root or: apt-get install ${pkgs[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
