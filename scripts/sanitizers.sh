#!/usr/bin/env bash
# Sanitizer runs (docs/SANITIZERS.md records the last results):
#   1. the C kernels (Sources/CKVDKernels) under ASan + UBSan: Tests/sanitizers/kernels_asan.c;
#   2. the C client's test program under ASan + UBSan (+ LSan) against real daemons;
#   3. kvd built with ThreadSanitizer under the 16-client mixed load (Tests/e2e/test_mixed_load.py),
#      then under the memory manager's lease and pressure tests;
#   4. (full run only) the Swift unit tests built with ASan (+ LSan): `swift test --sanitize=address`.
# Exits non-zero on any sanitizer report or failed test; prints a summary.
#
#   bash scripts/sanitizers.sh          # the full run: TSan mixed load for 60 s, then step 4
#   bash scripts/sanitizers.sh --ci     # what scripts/test.sh runs: steps 1-3, mixed load for 20 s
#                                       # (step 4 is a third full build, ~3.5 min from scratch here)
# KVD_TSAN_SECONDS overrides the mixed-load duration. Builds go to .build-tsan/ and .build-asan/
# (git-ignored, incremental); sanitizer logs to .build-tsan/reports/ and .build-asan/reports/.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
require_venv

seconds=60 ci=0
[ "${1:-}" = "--ci" ] && seconds=20 ci=1
seconds=${KVD_TSAN_SECONDS:-$seconds}
# The Swift toolchain's clang: its compiler-rt has the sanitizer runtimes, and -fsanitize=undefined
# there includes float-cast-overflow (gcc's does not).
CC=${KVD_SAN_CC:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1"
export PYTHONPATH="$root/Clients/python${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p .build-asan/reports .build-tsan/reports

summary=()
failed=0
step() {  # step NAME COMMAND...: runs, times and records one part
  local name=$1 t0=$SECONDS
  shift
  echo "== $name"
  if "$@"; then
    summary+=("ok    $name ($((SECONDS - t0)) s)")
  else
    summary+=("FAIL  $name ($((SECONDS - t0)) s)")
    failed=1
  fi
}

# 1 -------------------------------------------------------------------------------------------
kernels() {
  $CC -std=gnu11 -O3 -g -Wall -Wextra -Werror $SAN -fuse-ld=lld -I Sources/CKVDKernels/include \
    Tests/sanitizers/kernels_asan.c -o .build-asan/kernels_asan -ldl -lm &&
    .build-asan/kernels_asan 2>&1 | tee .build-asan/reports/kernels.log | tail -n 20 &&
    ! grep -Eq "runtime error|ERROR: (Address|Leak)Sanitizer" .build-asan/reports/kernels.log
}
step "ASan+UBSan: C kernels (Tests/sanitizers/kernels_asan.c)" kernels

# 2 -------------------------------------------------------------------------------------------
c_client() {
  # A fresh directory each time: the Makefile does not track CFLAGS, so stale objects could lack
  # instrumentation. Only B, CC and CFLAGS are overridden; Clients/c/build is not touched.
  rm -rf .build-asan/c-client
  swift build --product kvd &&
    make -s -C Clients/c -j2 CC="$CC" B="$root/.build-asan/c-client" \
      CFLAGS="-O1 -g $SAN -fuse-ld=lld -Wno-unused-command-line-argument" \
      "$root/.build-asan/c-client/test_kvd_client" &&
    KVD_BIN="$root/.build/debug/kvd" KVD_C_ASAN_BIN="$root/.build-asan/c-client/test_kvd_client" \
      "$KVD_PYTHON" -m pytest -q Tests/sanitizers/test_c_client_asan.py 2>&1 |
    tee .build-asan/reports/c-client.log | tail -n 5 &&
    ! grep -Eq "runtime error|ERROR: (Address|Leak)Sanitizer" .build-asan/reports/c-client.log
}
step "ASan+UBSan: C client test program against kvd" c_client

# 3 -------------------------------------------------------------------------------------------
tsan_build() {
  local t0=$SECONDS
  swift build --product kvd --scratch-path .build-tsan -Xswiftc -sanitize=thread -Xcc -fsanitize=thread || return 1
  echo "TSan build of kvd: $((SECONDS - t0)) s"
  # The Mutex shim (why: Tests/sanitizers/tsan_swift_mutex.c) wraps these exported slow paths.
  local sync exported
  sync=$(ldd .build-tsan/debug/kvd | awk '/libswiftSynchronization/ {print $3}')
  exported=$(nm -D "$sync") || return 1
  for sym in '_MutexHandleV9_lockSlowyys6UInt32VF' '_MutexHandleV12_tryLockSlowSbyF' '_MutexHandleV11_unlockSlowyyF'; do
    grep -q "$sym" <<<"$exported" || { echo "$sync no longer exports $sym; update tsan_swift_mutex.c" >&2; return 1; }
  done
  $CC -shared -fPIC -O2 -Wall -Wextra -Werror Tests/sanitizers/tsan_swift_mutex.c \
    -o .build-tsan/libtsan_swift_mutex.so -ldl || return 1
  # KVD_BIN for the tests: kvd with the shim preloaded (exec keeps the pid, so signals reach kvd).
  printf '#!/bin/sh\nLD_PRELOAD="%s" exec "%s" "$@"\n' "$root/.build-tsan/libtsan_swift_mutex.so" \
    "$root/.build-tsan/debug/kvd" > .build-tsan/kvd-tsan && chmod +x .build-tsan/kvd-tsan
}

tsan_selftest() {
  # With the shim, TSan must report the unguarded counter and nothing behind the Mutex.
  swiftc -sanitize=thread -g -Onone Tests/sanitizers/tsan_mutex_selftest.swift -o .build-tsan/tsan-selftest || return 1
  rm -f .build-tsan/reports/selftest.*
  LD_PRELOAD="$root/.build-tsan/libtsan_swift_mutex.so" TSAN_OPTIONS="log_path=$root/.build-tsan/reports/selftest" \
    timeout 300 .build-tsan/tsan-selftest
  local got
  got=$(cat .build-tsan/reports/selftest.* 2>/dev/null | grep '^SUMMARY' | sed 's/.* in //' | sort | uniq -c)
  echo "self-test reports: ${got:-none}"
  grep -q 'bumpUnguarded' <<<"$got" && ! grep -q 'bumpGuarded' <<<"$got"
}

tsan_mixed_load() {
  rm -f .build-tsan/reports/kvd.*
  # halt_on_error=0: collect every report of the run; kvd then exits 66 at SIGTERM, which the test's
  # fixture reports too. history_size=4: longer access history, so old stacks are less often lost.
  TSAN_OPTIONS="log_path=$root/.build-tsan/reports/kvd halt_on_error=0 history_size=4 second_deadlock_stack=1 suppressions=$root/Tests/sanitizers/tsan.supp" \
    KVD_BIN="$root/.build-tsan/kvd-tsan" KVD_MIXED_LOAD_SECONDS=$seconds KVD_MIXED_LOAD_TIMEOUT_MS=60000 \
    "$KVD_PYTHON" -m pytest -q -rP Tests/e2e/test_mixed_load.py 2>&1 | tee .build-tsan/reports/mixed-load.log | grep -E "^mixed load|passed|failed|Error"
  local ok=$? reports
  reports=$(cat .build-tsan/reports/kvd.* 2>/dev/null | grep -c 'WARNING: ThreadSanitizer')
  echo "TSan reports from kvd: $reports (logs: .build-tsan/reports/kvd.<pid>)"
  cat .build-tsan/reports/kvd.* 2>/dev/null | grep '^SUMMARY' | sort | uniq -c | sort -rn | head -n 20
  [ "$ok" -eq 0 ] && [ "$reports" -eq 0 ] && grep -Eq '^1 passed' .build-tsan/reports/mixed-load.log &&
    ! grep -Eq '[0-9]+ (failed|errors?)( |$)' .build-tsan/reports/mixed-load.log
}

tsan_memory_manager() {
  rm -f .build-tsan/reports/kvd.*
  # The memory manager's threads (its queue, reclaim passes on workers, the events queue) against
  # requests: the lease and pressure tests, whose clients race the manager for the same sequences.
  TSAN_OPTIONS="log_path=$root/.build-tsan/reports/kvd halt_on_error=0 history_size=4 second_deadlock_stack=1 suppressions=$root/Tests/sanitizers/tsan.supp" \
    KVD_BIN="$root/.build-tsan/kvd-tsan" \
    "$KVD_PYTHON" -m pytest -q Tests/e2e/test_memory_pressure.py Tests/e2e/test_memory_leases.py 2>&1 | tee .build-tsan/reports/memory.log | grep -E "passed|failed|Error"
  local reports
  reports=$(cat .build-tsan/reports/kvd.* 2>/dev/null | grep -c 'WARNING: ThreadSanitizer')
  echo "TSan reports from kvd: $reports (logs: .build-tsan/reports/kvd.<pid>)"
  cat .build-tsan/reports/kvd.* 2>/dev/null | grep '^SUMMARY' | sort | uniq -c | sort -rn | head -n 20
  [ "$reports" -eq 0 ] && grep -Eq '^[0-9]+ passed' .build-tsan/reports/memory.log &&
    ! grep -Eq '[0-9]+ (failed|errors?)( |$)' .build-tsan/reports/memory.log
}

step "TSan: build kvd and the Mutex shim" tsan_build
step "TSan: shim self-test (a real race reported, Mutex hand-overs not)" tsan_selftest
step "TSan: mixed load, 16 clients, ${seconds} s" tsan_mixed_load
step "TSan: memory manager (leases, pressure) against live clients" tsan_memory_manager

# 4 -------------------------------------------------------------------------------------------
swift_asan() {
  local t0=$SECONDS
  swift build --build-tests --sanitize=address --scratch-path .build-asan/swift || return 1
  echo "ASan build of the unit tests: $((SECONDS - t0)) s"
  # lsan.supp: allocations meant to live until exit (test plugin tables, XCTest's harness).
  LSAN_OPTIONS="suppressions=$root/Tests/sanitizers/lsan.supp" \
    swift test --skip-build --sanitize=address --scratch-path .build-asan/swift > .build-asan/reports/swift-test.log 2>&1
  local ok=$?
  grep -E "Test run with|✘|ERROR: (Address|Leak)Sanitizer|^SUMMARY" .build-asan/reports/swift-test.log
  [ "$ok" -eq 0 ] && ! grep -Eq "ERROR: (Address|Leak)Sanitizer" .build-asan/reports/swift-test.log
}
[ "$ci" -eq 0 ] && step "ASan+LSan: Swift unit tests (swift test --sanitize=address)" swift_asan

echo
echo "== sanitizers summary ($(date -u +%Y-%m-%dT%H:%MZ))"
printf '%s\n' "${summary[@]}"
exit $failed
