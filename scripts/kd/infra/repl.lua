-- repl: the interactive session of `kdseg`. Line editing and history through
-- libedit, tab completion of globals, fields and tensor methods, multi-line
-- input for unfinished statements, values printed (a trailing ';' silences),
-- errors shown without ending the session, `?name` for help.
local C = require("kd._C")
local pretty = require("kd.infra.pretty")

local repl = {}

local function history_path()
  local home = os.getenv("HOME")
  return home and (home .. "/.kdseg_history") or nil
end

-- Candidates for a word like "kd.ze" or "x:vi": the object before the last
-- separator, looked up from the globals, and its keys with the prefix.
function repl.complete(text)
  local head, sep, prefix = text:match("^(.-)([%.:])([%w_]*)$")
  local keys = {}
  local function add_keys(t)
    for k in pairs(t) do if type(k) == "string" then keys[k] = true end end
  end
  local object = _G
  if head then
    for part in head:gmatch("[^%.:]+") do
      if type(object) ~= "table" and not C.is_tensor(object) then return {} end
      local ok, value = pcall(function() return object[part] end)
      if not ok then return {} end
      object = value
    end
  else
    prefix, head, sep = text, "", ""
  end
  if C.is_tensor(object) then
    add_keys(C.Tensor_methods)
    if sep == "." then for _, k in ipairs({"grad", "requires_grad", "shape", "dtype", "ndim", "is_leaf"}) do keys[k] = true end end
  elseif type(object) == "table" then
    add_keys(object)
    local mt = getmetatable(object)
    local seen = 0
    while mt and type(mt.__index) == "table" and seen < 8 do -- class methods
      add_keys(mt.__index)
      mt, seen = getmetatable(mt.__index), seen + 1
    end
  else
    return {}
  end
  local out = {}
  for k in pairs(keys) do
    if k:sub(1, #prefix) == prefix and not (k:sub(1, 2) == "__") then out[#out + 1] = head .. sep .. k end
  end
  table.sort(out)
  return out
end

local function show(results, n)
  for i = 1, n do
    local v = results[i]
    if type(v) == "table" then print(pretty.value(v)) else print(tostring(v)) end
  end
end

-- Compiles a chunk: first as an expression (to print its value), then as a
-- statement. Returns the function, or nil and whether the input is unfinished.
local function compile(source)
  local fn = loadstring("return " .. source, "=stdin")
  if fn then return fn end
  local err
  fn, err = loadstring(source, "=stdin")
  if fn then return fn end
  if err:match("<eof>$") or err:match("'<eof>'$") then return nil, true end
  return nil, false, err
end

function repl.run()
  local history = history_path()
  if history then C.read_history(history) end
  C.set_completer(repl.complete)
  _G.help = kd.help
  print(string.format("kdseg %s (LuaJIT) - help(obj) or ?name for help, Ctrl-D to quit", kd.version))
  local buffer = nil -- the lines of a statement not finished yet
  -- One line typed: help, a statement run (and its values shown), or more
  -- of an unfinished one.
  local function take(line)
    if line:match("%S") then C.add_history(line) end
    local source = buffer and (buffer .. "\n" .. line) or line
    local name = source:match("^%s*%?%s*([%w_%.]+)%s*$")
    if name then
      buffer = nil
      kd.help(name)
    elseif source:match("%S") then
      local silent = source:match(";%s*$") ~= nil
      local fn, unfinished, err = compile(silent and source:gsub(";%s*$", "") or source)
      if silent and not fn and not unfinished then fn, unfinished, err = compile(source) end
      if fn then
        buffer = nil
        -- Compiled traces never look at hooks, so Ctrl-C could not stop a
        -- loop typed here; the library's code is compiled as usual.
        if jit then jit.off(fn, true) end
        local results = {xpcall(fn, debug.traceback)}
        if results[1] then
          if not silent then show({unpack(results, 2, table.maxn(results))}, table.maxn(results) - 1) end
        else
          print("error: " .. tostring(results[2]):gsub("\nstack traceback:.*", ""))
        end
      elseif unfinished then
        buffer = source
      else
        buffer = nil
        print("error: " .. err)
      end
    end
  end
  -- One prompt and what it reads; false at end of input (Ctrl-D).
  local function one_line()
    local line, why = C.readline(buffer and ">> " or "kd> ")
    if line then take(line)
    elseif why == "interrupted" then -- Ctrl-C at the prompt: drop what was typed, go on
      print()
      buffer = nil
    else
      print()
      return false
    end
    return true
  end
  while true do
    -- Ctrl-C between a statement's end and the next prompt (a value being
    -- printed; on a busy machine that moment grows) raises "interrupted"
    -- here, outside the statement's own xpcall: it ended the session. It
    -- now drops the line, as at the prompt.
    local ok, going_on = pcall(one_line)
    if not ok then
      if not tostring(going_on):match("interrupted$") then error(going_on, 0) end
      print()
      buffer, going_on = nil, true
    end
    if not going_on then break end
  end
  if history then C.write_history(history) end
end

return repl
