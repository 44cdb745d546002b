#!/bin/sh
# Runs fuzzing harnesses for SECONDS each, from their seeds (written by
# make_seeds.lua) and the corpus earlier runs kept in build/fuzz/corpus/.
# Prints per harness the executions, the corpus size and the crashes
# (inputs kept in build/fuzz/crashes/), then "fuzz: N passed, N failed".
#   tests/fuzz/run.sh SECONDS build/fuzz/fuzz_png ...
# FUZZ_SEED fixes libFuzzer's random seed (make test's short run does, so
# that it is the same run every time); unset, each run explores afresh.
set -u
cd "$(dirname "$0")/../.." || exit 1
seconds=$1; shift
build=build/fuzz
mkdir -p "$build/crashes"
build/kdseg tests/fuzz/make_seeds.lua "$build/seeds" || { echo "fuzz: cannot write the seeds"; exit 1; }
# The harnesses run FUZZ_JOBS (default: one per core) at a time: each is
# one process on one core, so make test's ten take half the time on two.
# Each runs for the same SECONDS, so waiting batch by batch keeps the cores
# as busy as a sliding window would.
jobs=${FUZZ_JOBS:-$(nproc)}
names() { name=$(basename "$1"); target=${name#fuzz_}; } # build/fuzz/fuzz_png: fuzz_png, png
fuzz() { # fuzz HARNESS: runs it, its exit code in its .rc file
    names "$1"; rm -f "$build/$name.rc"
    corpus=$build/corpus/$target
    mkdir -p "$corpus" "$build/seeds/$target"
    # leaks are findings too; the limits keep one pathological input from stalling the run
    ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=tests/fuzz/lsan.supp "$1" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
        -max_len=65536 -seed="${FUZZ_SEED:-0}" -print_final_stats=1 -artifact_prefix="$build/crashes/$target-" \
        "$corpus" "$build/seeds/$target" > "$build/$name.log" 2>&1
    echo $? > "$build/$name.rc"
}
started=0
for harness in "$@"; do
    fuzz "$harness" &
    started=$((started + 1))
    [ $((started % jobs)) = 0 ] && wait
done
wait
passed=0; failed=0
for harness in "$@"; do
    names "$harness"
    log=$build/$name.log
    rc=$(cat "$build/$name.rc" 2>/dev/null || echo "?")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    files=$(find "$build/corpus/$target" -type f | wc -l)
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        echo "fuzz $target: ${runs:-0} executions in ${seconds} s, corpus of $files inputs, 0 crashes"
    else
        failed=$((failed + 1))
        echo "FAIL fuzz $target: exit $rc after ${runs:-?} executions; the input is in $build/crashes/:"
        grep -E "ERROR|fuzz_lua:|SUMMARY|runtime error|Test unit written" "$log" | head -8
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed = 0 ]
