#!/usr/bin/env bash
# The benchmark suite's one command: release builds of kvd, its Swift echo baseline and kvd-bench,
# the C benchmark client, then every section (Benchmarks/README.md). Arguments go to the driver,
# e.g. `bash Benchmarks/run.sh --runs 5` or `--only rtt,data`. Not part of CI (a smoke run is).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
require_venv
for product in kvd kvd-echo kvd-bench; do swift build -c release --product "$product"; done
make -C Benchmarks/c
make -C Benchmarks/redis
PYTHONPATH="$root/Clients/python:$root${PYTHONPATH:+:$PYTHONPATH}" "$KVD_PYTHON" -m Benchmarks.suite.run "$@"
