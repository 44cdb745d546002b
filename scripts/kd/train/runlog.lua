-- runlog: what a run writes besides checkpoints: runs/<name>/config.json,
-- metrics.jsonl (one JSON object per logged step and per evaluation), and
-- the progress shown while it trains (a bar on a terminal, plain lines
-- otherwise).
local cjson = require("cjson")
local C = require("kd._C")
local files = require("kd.data.files")

local runlog = {}
runlog.__index = runlog

function runlog.open(dir, resume_iteration)
  files.mkdir_p(dir)
  local self = setmetatable({dir = dir, tty = C.isatty(1)}, runlog)
  local path = dir .. "/metrics.jsonl"
  if resume_iteration and files.exists(path) then
    -- lines logged after the checkpoint we resume from are logged again
    local keep = {}
    for line in io.lines(path) do
      local ok, entry = pcall(cjson.decode, line)
      if ok and type(entry) == "table" and (entry.iteration or 0) <= resume_iteration then keep[#keep + 1] = line end
    end
    C.write_atomic(path, #keep > 0 and (table.concat(keep, "\n") .. "\n") or "")
  elseif not resume_iteration then
    C.write_atomic(path, "")
  end
  self.path = path
  self.file = files.open_append(path)
  return self
end

-- What the other ranks of a data-parallel run keep instead: rank 0 alone
-- writes the run's files and prints its progress.
local silent = {}
for _, name in ipairs({"write_json", "log", "progress", "message", "close"}) do silent[name] = function() end end
function runlog.silent() return silent end

function runlog:write_json(name, value)
  C.write_atomic(self.dir .. "/" .. name, cjson.encode(value) .. "\n")
end

function runlog:log(entry)
  files.append(self.file, self.path, cjson.encode(entry) .. "\n")
end

local function clock_text(seconds)
  seconds = math.max(0, math.floor(seconds + 0.5))
  return string.format("%d:%02d:%02d", math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60)
end

-- One progress report: a bar redrawn in place on a terminal, a line otherwise.
function runlog:progress(p)
  local terms = {}
  for _, name in ipairs(p.term_names) do terms[#terms + 1] = string.format("%s %.4f", name, p.terms[name]) end
  local text = string.format("iter %d/%d  loss %.4f (%s)  lr %.5f  %.1f img/s  left %s", p.iteration, p.total,
                             p.loss, table.concat(terms, ", "), p.lr, p.images_per_second, clock_text(p.left))
  if self.tty then
    local width = 24
    local done = math.floor(width * p.iteration / p.total)
    io.write("\r\27[K[" .. string.rep("#", done) .. string.rep(".", width - done) .. "] " .. text)
    io.flush()
  elseif p.print_line then
    print(text)
  end
end

function runlog:message(text)
  if self.tty then io.write("\r\27[K") end
  print(text)
end

function runlog:close()
  if self.tty then io.write("\n") end
  self.file:close()
end

return runlog
