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
