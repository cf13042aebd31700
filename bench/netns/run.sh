#!/usr/bin/env bash
# Runs a command on N pretend hosts: one network namespace (and hostname) per
# rank, joined by a bridge, so that MPI between ranks goes over TCP through the
# kernel's network stack instead of shared memory: a network slower than
# memory, as between real nodes. Needs root, iproute2 and util-linux (unshare).
#
#   bash bench/netns/run.sh 2 python -m collex.bench.training --sets 64MiB
#
# mpirun comes from PATH (activate the environment collex is installed in);
# options placed before the command go to mpirun (e.g. -genv COLLEX_CHUNK_BYTES 4M).
# CX_RANKS_PER_HOST=k (default 1) puts k consecutive ranks on each host: N*k ranks.
#
# Everything it makes (namespaces cxh1..cxhN, bridge br-cx, veths vcx1..vcxN on
# 10.77.0.0/24) is removed when it ends.
set -euo pipefail
n=$1
shift
here="$(cd "$(dirname "$0")" && pwd)"

cleanup() {
  for i in $(seq 1 "$n"); do
    ip netns del "cxh$i" 2>/dev/null || true
    ip link del "vcx$i" 2>/dev/null || true
  done
  ip link del br-cx 2>/dev/null || true
}
trap cleanup EXIT
cleanup

ip link add br-cx type bridge
ip addr add 10.77.0.1/24 dev br-cx
ip link set br-cx up
hosts=()
for i in $(seq 1 "$n"); do
  ip netns add "cxh$i"
  ip link add "vcx$i" type veth peer name eth0 netns "cxh$i"
  ip link set "vcx$i" master br-cx
  ip link set "vcx$i" up
  ip netns exec "cxh$i" ip addr add "10.77.0.$((10 + i))/24" dev eth0
  ip netns exec "cxh$i" ip link set eth0 up
  ip netns exec "cxh$i" ip link set lo up
  # Long queues: with the default ones bursts of TCP segments get dropped and a
  # transfer stalls for a 200 ms retransmission timeout now and then.
  ip link set "vcx$i" txqueuelen 10000
  ip netns exec "cxh$i" ip link set eth0 txqueuelen 10000
  hosts+=("10.77.0.$((10 + i)):${CX_RANKS_PER_HOST:-1}")
done

# Hydra starts each rank through launch.sh (in the rank's namespace, with its own
# hostname); UCX is kept to TCP, since its shared-memory transports would
# otherwise find the peers on the same machine and bypass the network.
mpirun -hosts "$(IFS=,; echo "${hosts[*]}")" -launcher ssh -launcher-exec "$here/launch.sh" -iface br-cx \
  -n "$((n * ${CX_RANKS_PER_HOST:-1}))" -genv UCX_TLS tcp -genv UCX_NET_DEVICES eth0 "$@"
