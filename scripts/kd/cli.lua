-- cli: what `kdseg NAME args...` runs: a Lua script file, or the sub-command
-- scripts/kd/cli/NAME.lua (each a thin front to the library).
local C = require("kd._C")

local cli = {}

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

function cli.commands()
  local names = {}
  local p = io.popen('ls "' .. C.scripts_dir .. '/kd/cli" 2>/dev/null')
  if p then
    for line in p:lines() do
      local name = line:match("^(.-)%.lua$")
      if name then names[#names + 1] = name end
    end
    p:close()
  end
  table.sort(names)
  return names
end

-- "128x256" -> 128, 256; an error naming the option otherwise.
function cli.parse_size(text, option)
  local h, w = tostring(text):match("^(%d+)x(%d+)$")
  if not h or tonumber(h) < 1 or tonumber(w) < 1 then
    error(string.format("%s must be HxW with sizes of at least 1, e.g. 128x256; got %s", option, tostring(text)), 0)
  end
  return tonumber(h), tonumber(w)
end

function cli.main(first, ...)
  -- a command with --emit-slurm: print the Slurm job that runs it data-parallel
  -- (kdseg sweep's own --emit-slurm DIR writes a job array of trials)
  local slurm = require("kd.infra.slurm")
  local job, command = nil, nil
  if first ~= "sweep" then job, command = slurm.parse({first, ...}) end
  if job then
    io.write(slurm.script(job, command, C.exe_path(), C.cwd()))
    return
  end
  if first:match("%.lua$") or first:find("/") then
    if not file_exists(first) then error("cannot open script " .. first, 0) end
    local chunk, err = loadfile(first)
    if not chunk then error(err, 0) end
    return chunk(...)
  end
  local path = C.scripts_dir .. "/kd/cli/" .. first .. ".lua"
  if not file_exists(path) then
    error(string.format("'%s' is neither a script nor a command; commands: %s", first,
                        table.concat(cli.commands(), ", ")), 0)
  end
  return require("kd.cli." .. first)(...)
end

return cli
