#!/usr/bin/env bash
# Hydra's launcher for bench/netns/run.sh: called as `launch.sh [ssh options] HOST COMMAND...`,
# it runs COMMAND in the namespace of HOST (10.77.0.1K -> cxhK) under that namespace's hostname.
while [[ "${1:-}" == -* ]]; do shift; done
host=$1
shift
ns="cxh$((${host##*.} - 10))"
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"
