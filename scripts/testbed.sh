#!/usr/bin/env bash
# The sdx testbed for people: two network namespaces joined by a veth pair.
#
#    netns NAME-a                         netns NAME-b
#   +------------------------+           +------------------------+
#   | veth a   198.18.0.1/24 |===========| veth b   198.18.0.2/24 |
#   +------------------------+           +------------------------+
#
# Both ends live inside the namespaces; addresses come only from
# 198.18.0.0/15. Nothing outside the two namespaces is touched. QUEUES=N
# gives each veth end N rx and tx queues (default 1): a frame sent from
# AF_XDP queue q arrives on the peer's rx queue q.
#
# Usage (as root):
#   scripts/testbed.sh up   [NAME]      create (default NAME: sdxtb)
#   scripts/testbed.sh down [NAME]      remove
#   scripts/testbed.sh run  CMD ARGS... create with a unique name, run CMD with
#                                       SDX_NS_A/SDX_NS_B set, remove on exit
set -euo pipefail

up() {
	local n=$1
	ip netns add "$n-a"
	ip netns add "$n-b"
	local q=${QUEUES:-1}
	ip -n "$n-a" link add name a numtxqueues "$q" numrxqueues "$q" type veth \
		peer name b netns "$n-b" numtxqueues "$q" numrxqueues "$q"
	for h in a b; do
		local addr=198.18.0.1
		[ $h = b ] && addr=198.18.0.2
		ip -n "$n-$h" link set lo up
		ip -n "$n-$h" addr add "$addr/24" dev $h
		ip -n "$n-$h" link set dev $h up
	done
	echo "testbed $n: $n-a (a, 198.18.0.1) <-> $n-b (b, 198.18.0.2), $q queues"
}

down() {
	local n=$1
	for h in a b; do
		ip netns del "$n-$h" 2>/dev/null || true
	done
}

cmd=${1:-}
shift || true
case "$cmd" in
up) up "${1:-sdxtb}" ;;
down) down "${1:-sdxtb}" ;;
run)
	[ $# -gt 0 ] || { echo "usage: $0 run CMD [ARGS...]" >&2; exit 2; }
	name="sdxtb$$"
	trap 'down "$name"' EXIT
	up "$name"
	SDX_NS_A="$name-a" SDX_NS_B="$name-b" "$@"
	;;
*)
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
