# lib.sh - what the shell test suites share: the kdseg binary, a temporary
# folder removed on exit (and made the working folder), and the counters
# behind the closing "N passed, N failed" line. Set SUITE before sourcing.
top=$(cd "$(dirname "$0")/../.." && pwd)
kdseg=${KDSEG:-$top/build/kdseg} # KDSEG: another build (the sanitizer one)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
passed=0; failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL $SUITE: $1"; }
finish() { echo "$SUITE tests: $passed passed, $failed failed"; [ "$failed" = 0 ]; }

# tiny_dataset COARSE: a SynthCity of 12 training images (a quarter of them
# labeled in splits/1_4/), COARSE coarse-only ones and 2 for validation, in data/
tiny_dataset() {
    "$kdseg" synthcity --out data --train 12 --coarse "$1" --val 2 --size 32x64 --seed 4 > /dev/null || fail "synthcity"
    "$kdseg" splits --root data --fractions 1/4 --seed 0 > /dev/null || fail "splits"
}

# running PID: the process is alive (not ended and waiting to be reaped)
running() { [ -e "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -c1)" != Z ]; }

# kill_and_resume NAME KILLS LONGEST COMMAND...: in folder NAME, COMMAND is
# started (with --resume after the first time) and killed KILLS times after a
# random 0.2 s to LONGEST s, then run with --resume to its end. The delays
# come from $seed (set it, printed, before calling).
kill_and_resume() {
    name=$1; kills=$2; longest=$3; shift 3
    mkdir -p "$name"; (cd "$name" && ln -sf ../data data)
    k=0; resume=""
    while [ $k -lt "$kills" ]; do
        delay=$(awk -v s="$seed" -v k="$k" -v n="$name" -v l="$longest" 'BEGIN { srand(s + 17 * k + length(n)); printf "%.2f", 0.2 + (l - 0.2) * rand() }')
        (cd "$name" && exec "$@" $resume > "run$k.log" 2>&1) &
        pid=$!
        sleep "$delay"
        if running $pid && kill -9 $pid 2>/dev/null; then echo "$name: killed after ${delay}s"; else echo "$name: ended before ${delay}s"; fi
        wait $pid 2>/dev/null
        k=$((k + 1)); resume="--resume"
    done
    (cd "$name" && "$@" --resume > final.log 2>&1) || { fail "$name: the resumed run failed"; tail -5 "$name/final.log"; }
}

# killed_beside_reference NAME KILLS LONGEST COMMAND...: COMMAND runs
# uninterrupted in NAME_ref while its twin in NAME_killed goes through
# kill_and_resume, so both cores work; a failed reference run is reported
# with its log's tail. The two folders are then compared by the caller.
killed_beside_reference() {
    ref=$1_ref; killed=$1_killed; kills=$2; longest=$3; shift 3
    mkdir -p "$ref"; (cd "$ref" && ln -sf ../data data)
    (cd "$ref" && exec "$@" > run.log 2>&1) &
    reference=$!
    kill_and_resume "$killed" "$kills" "$longest" "$@"
    wait $reference || { fail "$ref: the uninterrupted run failed"; tail -5 "$ref/run.log"; }
}

