-- rundir: a run folder belongs to one run. Claiming it locks it for this
-- process (a second kdseg that claims it fails, naming the holder's pid; a
-- killed process leaves no stale lock), and a new run is refused where an
-- earlier run left its files, unless it resumes that run or is told to
-- overwrite it. Nested folders (a pipeline and its stages) are claimed each.
--   local dir = rundir.path("runs", name)  -- checks the name: it stays under runs/
--   rundir.claim(dir, {resume = false, overwrite = false})
--   rundir.release("runs/mine")
local C = require("kd._C")
local kd = require("kd")
local files = require("kd.data.files")

local rundir = {}

local LOCK = ".lock"
local held = {} -- folder -> file descriptor of its lock, for this process

-- What an earlier run left in dir (anything but the lock), or nil.
local function leftover(dir)
  for _, name in ipairs(C.listdir(dir)) do
    if name ~= LOCK then return name end
  end
end

-- runs_dir/name, where name is a plain relative path (letters, digits,
-- _ - . and /, no "..", not absolute), so a run never writes outside runs_dir.
function rundir.path(runs_dir, name, where)
  if type(name) ~= "string" or not name:match("^[%w_%-%.][%w_%-%./]*$") or name:find("%.%.") or name:find("//") then
    error(string.format("%s: name must be a plain relative path (letters, digits, _ - . /), got %s",
                        where or "run", type(name) == "string" and ("'" .. name .. "'") or tostring(name)), 0)
  end
  if type(runs_dir) ~= "string" or runs_dir == "" then
    error(string.format("%s: runs_dir must be a folder name, got %s", where or "run", tostring(runs_dir)), 0)
  end
  return runs_dir .. "/" .. name
end

local function claim_here(dir, options)
  files.mkdir_p(dir)
  if not held[dir] then
    local fd, pid = C.lock_file(dir .. "/" .. LOCK)
    if not fd then
      error(string.format("%s is in use by another kdseg process (pid %s); wait for it to end, stop it, "
                          .. "or give this run another name", dir, tostring(pid)), 0)
    end
    held[dir] = fd
  end
  local found = not options.resume and leftover(dir)
  if found then
    if not options.overwrite then
      error(string.format("%s already holds a run (%s is there): --resume continues it, --overwrite replaces it, "
                          .. "or give this run another name", dir, found), 0)
    end
    for _, name in ipairs(C.listdir(dir)) do
      if name ~= LOCK then C.remove_tree(dir .. "/" .. name) end
    end
  end
end

-- Data-parallel (kd.dist), rank 0 alone holds and prepares the folder and
-- the other ranks wait for it (an overwrite empties it first): every rank
-- calls claim, in the same order.
function rundir.claim(dir, options)
  options = options or {}
  if kd.dist.is_main() then claim_here(dir, options) end
  kd.dist.barrier()
end

function rundir.release(dir)
  if held[dir] then C.unlock_file(held[dir]); held[dir] = nil end
end

return rundir
