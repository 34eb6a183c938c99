#!/usr/bin/env bash
# Builds the libFuzzer target over request decoding and dispatch (Fuzz/kvd-fuzz, Fuzz/README.md)
# with AddressSanitizer, replays the committed crash reproducers, then fuzzes for SECONDS (default
# 90, CI's budget) from a copy of the seed corpus. Exits non-zero on any crash, timeout or
# out-of-memory, printing the input that caused it.
#
#   scripts/fuzz.sh [SECONDS] [LIBFUZZER_FLAG...]
#   scripts/fuzz.sh 14400 -fork=2 -ignore_crashes=1     # hours, 2 processes, collect every crash
#   KVD_FUZZ_CORPUS=~/kvd-corpus scripts/fuzz.sh 3600  # keep the grown corpus between runs
#   KVD_FUZZ_CONFIG=release scripts/fuzz.sh 14400      # optimised build: slower to build, faster to run
#   KVD_FUZZ_SKIP_KNOWN=1 scripts/fuzz.sh 3600         # do not send requests that hit known crashes
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=${1:-90}
shift || true
# 0 would mean "no limit" to libFuzzer.
case "$seconds" in
  '' | *[!0-9]* | 0) echo "usage: scripts/fuzz.sh [SECONDS >= 1] [LIBFUZZER_FLAG...]" >&2; exit 2 ;;
esac

# Its own scratch path: sanitizer flags change every module, and sharing .build would rebuild
# everything twice per test run. `--sanitize fuzzer` makes SwiftPM instrument every target for
# coverage (C with -fsanitize=fuzzer, which only instruments when compiling) and link libFuzzer's
# main instead of the executable's. ASan comes through -Xswiftc/-Xcc, not a second --sanitize:
# SwiftPM passes each sanitizer as its own -sanitize= flag, the Swift driver keeps only the last
# one, so `--sanitize fuzzer --sanitize address` silently loses coverage or ASan in Swift code
# (and lists them in a random order, rebuilding everything on every run). -DKVD_LIBFUZZER drops
# the replay tool's @main (Fuzz/kvd-fuzz/ReplayMain.swift).
# KVD_FUZZ_CONFIG=release: ~3x the executions per second for ~2.5x the build time (2 free cores,
# cold: debug ~50 s and 80-200 exec/s, release ~120 s and 250-500 exec/s); worth it for long runs.
# CI keeps debug: quicker to build, and assert() stays on.
config=${KVD_FUZZ_CONFIG:-debug}
build=(swift build -c "$config" --scratch-path .build-fuzz --product kvd-fuzz --sanitize fuzzer
  -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=address -Xswiftc -DKVD_LIBFUZZER)
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-fuzz.XXXXXX")
corpus=${KVD_FUZZ_CORPUS:-$work/corpus}
artifacts="$work/artifacts"
mkdir -p "$corpus" "$artifacts"
start=$(date +%s)
status=0
"${build[@]}" >"$work/build.log" 2>&1 || status=$?
# ld.gold warns once per ASan helper symbol; nothing to act on.
grep -v 'Cannot export local symbol' "$work/build.log" | tail -n 15 || true
if [ "$status" -ne 0 ]; then
  echo "fuzz: build failed (status $status); full log $work/build.log" >&2
  exit 1
fi
echo "fuzz: build took $(( $(date +%s) - start )) s"
bin="$("${build[@]}" --show-bin-path)/kvd-fuzz"

# Swift's crash backtracer stalls under ASan; libFuzzer prints the stack itself. LeakSanitizer
# reports objects the harness still references as leaked (Swift keeps some references in a form
# its scan does not recognise);
# memory growth is caught by -rss_limit_mb, page and staging leaks by the harness's arena check.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
symbolizer="$(dirname "$(command -v swift)")/llvm-symbolizer"
if [ -x "$symbolizer" ]; then export ASAN_SYMBOLIZER_PATH="$symbolizer"; fi

# A run without seeds would fuzz from nothing and still "pass"; refuse it.
seeds=$(find Fuzz/corpus -type f | wc -l)
if [ "$seeds" -eq 0 ]; then
  echo "fuzz: no seeds in Fuzz/corpus; regenerate them (Fuzz/README.md)" >&2
  exit 1
fi
cp Fuzz/corpus/* "$corpus/"

# Segments of fuzzer processes that crashed stay in /dev/shm (a crash skips the clean-up); remove
# those whose process is gone.
clean_shm() {
  for f in /dev/shm/kvd-inproc-*; do
    [ -e "$f" ] || continue
    pid=${f#/dev/shm/kvd-inproc-}
    pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || rm -f "$f"
  done
}
trap clean_shm EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap runs

# The failure lines and the project's frames of a crash log, demangled, paths relative to the root.
summarize() {
  grep -aE 'Fatal error|runtime failure|ERROR: (AddressSanitizer|libFuzzer)|^ +#[0-9]+ .* in .*(Sources|Plugins|Fuzz)/' "$1" \
    | { swift demangle --simplified 2>/dev/null || cat; } | sed "s|$root/||g" | head -n "${2:-14}" || true
}

failed=0
# Every committed reproducer is a regression test: it must run cleanly once its bug is fixed.
for repro in Fuzz/crashes-found/*.bin; do
  [ -e "$repro" ] || continue
  if ! env -u KVD_FUZZ_SKIP_KNOWN "$bin" "$repro" >"$work/replay.log" 2>&1; then
    echo "fuzz: FAILED: known reproducer $repro still crashes:"
    summarize "$work/replay.log" 8
    failed=1
  fi
done

flags=(-max_total_time="$seconds" -max_len=8192 -timeout=25 -rss_limit_mb=2048 -print_final_stats=1
  -artifact_prefix="$artifacts/" -dict=Fuzz/kvd.dict)
echo "fuzz: $bin ${flags[*]} $* $corpus ($seeds seeds)"
status=0
"$bin" "${flags[@]}" "$@" "$corpus" >"$work/fuzz.log" 2>&1 || status=$?
# Progress (plain runs: INITED, pulse, DONE; -fork runs: one line per job), final stats, failures.
grep -aE '^#[0-9]+.*(INITED|DONE|pulse)|^#[0-9]+: cov|^stat::' "$work/fuzz.log" | tail -n 12 || true

# Coverage of the Swift code is what makes the fuzzer more than random: with it, the binary has
# ~145,000 counters; with only the C kernels instrumented, ~5,000 (see the build flags above).
counters=$(grep -aoE 'Loaded 1 modules +\([0-9]+ inline 8-bit counters' "$work/fuzz.log" | grep -oE '[0-9]+ inline' | grep -oE '[0-9]+' || true)
if [ "${counters:-0}" -lt 50000 ]; then
  echo "fuzz: FAILED: only ${counters:-0} coverage counters; the Swift code was built without -sanitize=fuzzer"
  failed=1
fi

# A run that executed nothing (the fuzzer failed to start, or read no input) must not pass.
executed=$(grep -aoE '^stat::number_of_executed_units: *[0-9]+' "$work/fuzz.log" | grep -oE '[0-9]+$' || true)
if [ -z "$executed" ]; then  # -fork runs print no final stats; take the last progress line's count
  executed=$(grep -aoE '^#[0-9]+' "$work/fuzz.log" | tail -n 1 | tr -d '#' || true)
fi
if [ "${executed:-0}" -le "$seeds" ]; then
  echo "fuzz: FAILED: only ${executed:-0} inputs executed (seeds: $seeds); see $work/fuzz.log"
  failed=1
else
  echo "fuzz: $executed inputs executed in $seconds s"
fi

found=$(find "$artifacts" -type f | sort)
if [ "$status" -ne 0 ] || [ -n "$found" ]; then
  failed=1
  echo "fuzz: FAILED (libFuzzer exit status $status); full log $work/fuzz.log"
  summarize "$work/fuzz.log" 40
  for f in $found; do
    echo "fuzz: input: $f ($(wc -c <"$f") bytes); replay: swift run kvd-fuzz $f (KVD_FUZZ_TRACE=1 prints each request)"
  done
fi
echo "fuzz: corpus now $(find "$corpus" -type f | wc -l) inputs in $corpus; log $work/fuzz.log"
exit "$failed"
