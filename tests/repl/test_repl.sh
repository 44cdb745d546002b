#!/bin/sh
# Drives the kdseg REPL through a pseudo-terminal (tmux): completion of a kd.
# prefix, a printed value, an error followed by a working line, a silenced
# value, help, Ctrl-C interrupting a running loop or a value being printed,
# history saved on exit.
# Prints "N passed, N failed"; exits non-zero on any failure.
set -u
kdseg=${KDSEG:-$(cd "$(dirname "$0")/../.." && pwd)/build/kdseg} # KDSEG: another build (the sanitizer one)
home=$(mktemp -d)
session=kdseg-repl-$$
passed=0; failed=0
screen() { tmux capture-pane -p -t "$session" -S -200; }
wait_for() { # wait_for TEXT: up to 10 s for TEXT on the screen
    i=0
    while [ $i -lt 100 ]; do
        screen | grep -qF -- "$1" && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}
expect() { # expect DESCRIPTION TEXT
    if wait_for "$2"; then passed=$((passed + 1)); else
        failed=$((failed + 1)); echo "FAIL repl: $1: '$2' not on screen:"; screen | tail -15
    fi
}
line() { tmux send-keys -t "$session" -l "$1"; tmux send-keys -t "$session" Enter; }
cleanup() { tmux kill-session -t "$session" 2>/dev/null; rm -rf "$home"; }
trap cleanup EXIT

tmux new-session -d -s "$session" -x 120 -y 50 "env HOME=$home $kdseg"
expect "banner" "kdseg"
tmux send-keys -t "$session" -l "kd.ze"; tmux send-keys -t "$session" Tab
expect "completion of kd.ze" "kd> kd.zeros"
line "({2, 3})"
expect "printed value" "[kd.Tensor float32 of 2x3]"
line "1 + nil"
expect "error shown" "attempt to perform arithmetic"
line "40 + 2"
expect "the session goes on after an error" "42"
line "for i = 1, 2 do"; line "print('line ' .. i)"; line "end"
expect "multi-line input" "line 2"
line "x = kd.ones({3}) * 7;"; line "x:get(1) + 1000"
expect "a trailing ; silences, the assignment holds" "1007"
line "?kd.conv2d"
expect "help" "kd.conv2d(x, weight[, bias]"
tmux send-keys -t "$session" -l "x:vie"; tmux send-keys -t "$session" Tab
expect "completion of a tensor method" "x:view"
tmux send-keys -t "$session" C-u; line "while true do end"
sleep 0.5
tmux send-keys -t "$session" C-c
expect "Ctrl-C interrupts the statement" "interrupted"
line "'still ' .. 'here'"
expect "the session survives Ctrl-C" "still here"
# Ctrl-C at an idle prompt, and with a half-typed line, goes on with a new prompt
tmux send-keys -t "$session" C-c
sleep 0.3
tmux send-keys -t "$session" -l "error('half typed')"; tmux send-keys -t "$session" C-c
sleep 0.3
line "'alive ' .. 'after Ctrl-C'"
expect "Ctrl-C at the prompt does not end the session" "alive after Ctrl-C"
if screen | grep -q "error: .*half typed"; then failed=$((failed + 1)); echo "FAIL repl: a line dropped by Ctrl-C ran"
else passed=$((passed + 1)); fi
# Ctrl-C while a value is being printed (a slow __tostring: the REPL's own
# code, after the statement's end) drops it and the session goes on; it
# used to end the session
line "slow = setmetatable({}, {__tostring = function() local t = os.clock() while os.clock() - t < 3 do end return 'slow' end})"
line "slow"
wait_for "kd> slow"
sleep 0.5
tmux send-keys -t "$session" C-c
line "'alive ' .. 'after printing'"
expect "Ctrl-C while a value is printed does not end the session" "alive after printing"
line "help('kd')"
expect "help('kd') lists the API" "kd holds:"
tmux send-keys -t "$session" C-d
i=0; while tmux has-session -t "$session" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if grep -qF "?kd.conv2d" "$home/.kdseg_history" 2>/dev/null; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL repl: history file lacks '?kd.conv2d'"; fi
echo "REPL tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
