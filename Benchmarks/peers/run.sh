#!/usr/bin/env bash
# The peer side-by-side benchmarks, one command (see README.md here):
#   bash Benchmarks/peers/run.sh
# Installs the peers (setup.sh), starts its own kvd on a temporary copy of Config/bench.yaml (own
# endpoints and shm name), runs kvpress then kvd compaction, LMCache then the kvd data path, one
# after the other so no two measured processes compete for the cores, and writes
# Benchmarks/peers/out/peers.json + peers.md (the Markdown table, also printed).
#   KVD_BIN         kvd binary (default <repo>/.build/release/kvd)
#   KVD_VENV        kvd's venv (default ~/.cache/kvd/venv, as scripts/env.sh)
#   KVD_PEERS_PORT  base tcp port (default 5730): kvd on it, LMCache on +10 (+11 HTTP, +12 metrics)
#   PEERS_REPEATS   repeats per row (default 10; each kvpress repeat is a full 2000-token prefill)
#   PEERS_ONLY      compaction: only kvpress vs kvd compaction (no LMCache, no data path)
# plus setup.sh's KVD_PEERS_DIR / KVPRESS_VENV / LMCACHE_VENV.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/env.sh"
kvd_bin=${KVD_BIN:-$root/.build/release/kvd}
peers_dir=${KVD_PEERS_DIR:-$HOME/.cache/kvd/peers}
kvpress_py=${KVPRESS_VENV:-$peers_dir/kvpress}/bin/python
lmcache_py=${LMCACHE_VENV:-$peers_dir/lmcache}/bin/python
port=${KVD_PEERS_PORT:-5730}
lmc_port=$((port + 10))
repeats=${PEERS_REPEATS:-10}
out=$here/out

[[ -x $kvd_bin ]] || { echo "run.sh: no kvd binary at $kvd_bin (swift build -c release, or set KVD_BIN)" >&2; exit 2; }
[[ -x $KVD_PYTHON ]] || { echo "run.sh: no kvd venv at $KVD_VENV (bash scripts/install-deps.sh)" >&2; exit 2; }
bash "$here/setup.sh"
mkdir -p "$out"
rm -f "$out"/*.json "$out"/peers.md

tmp=$(mktemp -d /tmp/kvd-peers.XXXXXX)
pids=()
cleanup() {
    # Only what this script started, by pid (LMCache in its own session: its process group).
    for p in "${pids[@]}"; do
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# kvd on a copy of the bench config with this run's endpoints and shm name.
ipc="ipc://$tmp/kvd.sock"
tcp="tcp://127.0.0.1:$port"
sed -E -e "s#\"ipc://[^\"]*\"#\"$ipc\"#" -e "s#\"tcp://[^\"]*\"#\"$tcp\"#" \
    -e "s#^( *shm_name: *)\"[^\"]*\"#\1\"/kvd-peers-$$\"#" "$root/Config/bench.yaml" > "$tmp/kvd.yaml"
grep -q "$tcp" "$tmp/kvd.yaml" && grep -q "/kvd-peers-$$" "$tmp/kvd.yaml" \
    || { echo "run.sh: could not set endpoints in the copy of Config/bench.yaml" >&2; exit 1; }
setsid "$kvd_bin" --config "$tmp/kvd.yaml" > "$out/kvd.log" 2>&1 &
pids+=($!)
export PYTHONPATH="$root/Clients/python${PYTHONPATH:+:$PYTHONPATH}"
"$KVD_PYTHON" - "$tcp" <<'EOF'
import sys, time
from kvd import Client, KvdError
for _ in range(60):
    try:
        with Client(sys.argv[1], timeout_ms=500) as c:
            c.hello(); sys.exit(0)
    except KvdError:
        time.sleep(0.5)
sys.exit("run.sh: kvd did not answer Hello within 30 s (see out/kvd.log)")
EOF

status=0
echo "== kvpress peer" >&2
if "$kvpress_py" "$here/kvpress_peer.py" --out "$tmp/peer" --repeats "$repeats" \
        2> "$out/kvpress.log"; then
    cp "$tmp/peer/kvpress.json" "$out/"
    echo "== kvd compaction" >&2
    "$KVD_PYTHON" "$here/kvd_side.py" compact --endpoint "$tcp" --peer-dir "$tmp/peer" \
        --out "$out/kvd_compact.json" --repeats "$repeats" || status=1
else
    echo "run.sh: kvpress_peer.py failed, see $out/kvpress.log" >&2; status=1
fi

if [[ ${PEERS_ONLY:-} == compaction ]]; then
    "$KVD_PYTHON" "$here/summarize.py" "$out"
    exit $status
fi

echo "== LMCache peer" >&2
# LMCache reports usage to its own web service unless told not to.
export LMCACHE_TRACK_USAGE=false DO_NOT_TRACK=1
LMCACHE_DISABLE_BANNER=1 setsid "$(dirname "$lmcache_py")/lmcache" server --host 127.0.0.1 \
    --port "$lmc_port" --l1-size-gb 2 --eviction-policy LRU --http-host 127.0.0.1 \
    --http-port $((lmc_port + 1)) --prometheus-port $((lmc_port + 2)) > "$out/lmcache-server.log" 2>&1 &
lmc_pid=$!
pids+=($lmc_pid)
if PYTHONWARNINGS=ignore LMCACHE_DISABLE_BANNER=1 "$lmcache_py" "$here/lmcache_peer.py" \
        --port "$lmc_port" --out "$out/lmcache.json" --repeats "$repeats" 2> "$out/lmcache.log"; then :
else
    echo "run.sh: lmcache_peer.py failed, see $out/lmcache.log and $out/lmcache-server.log" >&2
    status=1
fi
kill -TERM -- "-$lmc_pid" 2>/dev/null || true      # stop it before kvd's data path is measured
wait "$lmc_pid" 2>/dev/null || true
pids=("${pids[0]}")                                  # kvd only from here on

echo "== kvd data path" >&2
"$KVD_PYTHON" "$here/kvd_side.py" datapath --endpoint "$tcp" --out "$out/kvd_datapath.json" \
    --repeats "$repeats" || status=1

"$KVD_PYTHON" "$here/summarize.py" "$out"
exit $status
