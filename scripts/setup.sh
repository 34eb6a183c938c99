#!/usr/bin/env bash
# First command of the README: install what is missing, build kvd (release), and run it on the
# bundled default configuration. Stop it with Ctrl-C (SIGINT): it removes its shm segment and socket.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
swift build -c release --product kvd
swift build -c release --product kvctl   # the admin command line (docs/KVCTL.md)
echo "kvd and kvctl built in .build/release; Python client installed in $(. scripts/env.sh; echo "$KVD_VENV")" >&2
exec .build/release/kvd --config "${1:-Config/kvd.yaml}"
