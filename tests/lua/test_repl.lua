-- The REPL's loop (kd.infra.repl) with its terminal replaced: lines come
-- from a list instead of libedit, printed lines are collected, and the
-- history file is left alone, so the interrupt lands exactly where the test
-- puts it. (tests/repl/test_repl.sh drives the real one through a
-- pseudo-terminal, where a slow __tostring holds the REPL in its own code
-- long enough for a Ctrl-C.)
local h = require("harness")
local T = {}

local C = kd._C
local stubbed = {"readline", "read_history", "write_history", "add_history", "set_completer"}

-- Runs the REPL on `lines` (a function raises its error where the line
-- would have been read). Returns pcall's result, the printed lines, and how
-- many lines were asked for.
local function session(lines)
  local saved, print_saved = {}, _G.print
  for _, name in ipairs(stubbed) do saved[name] = C[name] end
  local asked, printed = 0, {}
  C.readline = function()
    asked = asked + 1
    local line = lines[asked]
    if type(line) == "function" then return line() end
    return line
  end
  C.read_history, C.add_history, C.set_completer = function() end, function() end, function() end
  C.write_history = function() return true end
  _G.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    printed[#printed + 1] = table.concat(parts, "\t")
  end
  local ok, err = pcall(require("kd.infra.repl").run)
  _G.print = print_saved
  for _, name in ipairs(stubbed) do C[name] = saved[name] end
  return ok, err, printed, asked
end

local function shown(printed, text)
  for _, line in ipairs(printed) do if line:find(text, 1, true) then return true end end
  return false
end

-- Ctrl-C that lands after a statement has finished but before the next
-- prompt (SIGINT's hook raises "interrupted" in the REPL's own code) drops
-- that moment's line and the session goes on; it used to end the session.
function T.ctrl_c_between_statements_does_not_end_the_session()
  local ok, err, printed, asked = session({"40 + 2", function() error("interrupted") end, "1000 + 7"})
  h.truthy(ok, "the session ended: " .. tostring(err))
  h.eq(asked, 4, "lines asked for (the last one: end of input)")
  h.truthy(shown(printed, "42"), "the value before the interrupt")
  h.truthy(shown(printed, "1007"), "the value after the interrupt")
end

-- Any other error in the REPL's own code still ends it, with its message.
function T.other_errors_in_the_loop_end_the_session()
  local ok, err = session({"40 + 2", function() error("terminal gone", 0) end, "1000 + 7"})
  h.truthy(not ok, "the session went on after an error of its own")
  h.truthy(tostring(err):find("terminal gone", 1, true), "the message: " .. tostring(err))
end

-- A statement's own error is shown and the session goes on (as before).
function T.a_statements_error_is_shown()
  local ok, _, printed = session({"error('boom')", "1 + 1"})
  h.truthy(ok, "the session ended")
  h.truthy(shown(printed, "error: ") and shown(printed, "boom"), "the error shown")
  h.truthy(shown(printed, "2"), "the next statement ran")
end

return T
