#!/usr/bin/env bash
# Second command of the README: every test. Swift unit tests (Swift Testing), the C client build,
# then the end-to-end pytest suite against the real kvd binary (Python and C clients).
# Run scripts/install-deps.sh (or setup.sh) once before.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
require_venv

swift build --product kvd
swift build --product kvctl   # Tests/e2e/test_kvctl.py runs it next to kvd
# The benchmark suite's binaries, for its smoke run (Tests/e2e/test_benchmarks_smoke.py).
swift build --product kvd-echo
swift build --product kvd-bench
swift test
# The C client library, its tests and examples (run by Tests/e2e/test_c_client.py), and the C
# benchmark client.
make -C Clients/c
make -C Benchmarks/c
PYTHONPATH="$root/Clients/python${PYTHONPATH:+:$PYTHONPATH}" KVD_BIN="$root/.build/debug/kvd" "$KVD_PYTHON" -m pytest -q Tests/e2e "$@"
# Sanitizers (docs/SANITIZERS.md): the C kernels and the C client under ASan+UBSan, and kvd built
# with ThreadSanitizer under a 20 s 16-client mixed load (a second, incremental build of kvd, about
# a minute from scratch). `bash scripts/sanitizers.sh` alone runs the 60 s version.
bash scripts/sanitizers.sh --ci
# libFuzzer over request decoding and dispatch for a bounded time (Fuzz/README.md): replays the
# known crash reproducers, then fuzzes; fails on any crash, and on a run that executed no inputs.
bash scripts/fuzz.sh "${KVD_FUZZ_SECONDS:-90}"
