-- files: the few file-system helpers the data code needs.
local C = require("kd._C")

local files = {}

function files.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function files.mkdir_p(path)
  local sofar = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    sofar = sofar .. "/" .. part
    if not C.is_dir(sofar) then C.mkdir(sofar) end
  end
end

-- Files under dir (recursively) whose names end with suffix, sorted.
function files.find(dir, suffix)
  local out = {}
  local function walk(d)
    for _, name in ipairs(C.listdir(d)) do
      local path = d .. "/" .. name
      if C.is_dir(path) then walk(path)
      elseif name:sub(-#suffix) == suffix then out[#out + 1] = path end
    end
  end
  walk(dir)
  table.sort(out)
  return out
end

-- Opens path for appending; an error names it.
function files.open_append(path)
  local f, err = io.open(path, "a")
  if not f then error("cannot open " .. tostring(err), 0) end
  return f
end

-- Writes text to f (opened on path) and flushes it: a failed write (a full
-- disk) is an error naming the file, never a line silently lost. A line cut
-- short by it is skipped by the readers of JSON lines.
function files.append(f, path, text)
  local ok, err = f:write(text)
  if ok then ok, err = f:flush() end
  if not ok then error("cannot write " .. path .. ": " .. tostring(err), 0) end
end

-- The whole file; an error names it, located `level` calls up (default 1:
-- the caller of read).
function files.read(path, level)
  local f, err = io.open(path, "rb")
  if not f then error("cannot open " .. tostring(err), (level or 1) + 1) end
  local s = f:read("*a")
  f:close()
  if not s then error("cannot read " .. path .. " (a folder?)", 0) end
  return s
end

return files
