-- report: a sweep's results from its ledger: report.md (trials sorted by the
-- metric; mean and spread over seeds per configuration; the best
-- configuration as a ready-to-run command), one SVG per parameter (metric
-- against the parameter's values) and report.html gathering them.
local cjson = require("cjson")
local C = require("kd._C")
local files = require("kd.data.files")
local runner = require("kd.sweep.runner")
local spec_mod = require("kd.sweep.spec")
local stats = require("kd.infra.stats")
local pseudo_probe = require("kd.train.pseudo_probe")

local report = {}

local function svg_scatter(title, points, x_label, y_label, log_x)
  local W, H, L, R, T, B = 420, 260, 56, 12, 28, 36
  if #points == 0 then return "<p>" .. title .. ": no finished trial</p>" end
  local x0, x1, y0, y1 = math.huge, -math.huge, math.huge, -math.huge
  local function fx(x) return log_x and math.log10(x) or x end
  for _, p in ipairs(points) do
    x0, x1 = math.min(x0, fx(p[1])), math.max(x1, fx(p[1]))
    y0, y1 = math.min(y0, p[2]), math.max(y1, p[2])
  end
  if x1 == x0 then x0, x1 = x0 - 1, x1 + 1 end
  if y1 == y0 then y0, y1 = y0 - 1, y1 + 1 end
  local function sx(x) return L + (fx(x) - x0) / (x1 - x0) * (W - L - R) end
  local function sy(y) return H - B - (y - y0) / (y1 - y0) * (H - T - B) end
  local parts = {string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">', W, H),
    string.format('<text x="%d" y="18" font-size="14" font-family="sans-serif">%s</text>', L, title),
    string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>',
                  L, H - B, W - R, H - B, L, T, L, H - B)}
  for k = 0, 4 do
    local y = y0 + (y1 - y0) * k / 4
    local x = x0 + (x1 - x0) * k / 4
    parts[#parts + 1] = string.format('<text x="%d" y="%.1f" font-size="10" text-anchor="end" font-family="sans-serif">%.3g</text>', L - 4, sy(y) + 3, y)
    parts[#parts + 1] = string.format('<text x="%.1f" y="%d" font-size="10" text-anchor="middle" font-family="sans-serif">%.3g</text>',
                                      L + (x - x0) / (x1 - x0) * (W - L - R), H - B + 14, log_x and 10 ^ x or x)
  end
  parts[#parts + 1] = string.format('<text x="%d" y="%d" font-size="11" text-anchor="middle" font-family="sans-serif">%s</text>', (W + L) / 2, H - 4, x_label)
  parts[#parts + 1] = string.format('<text x="12" y="%d" font-size="11" font-family="sans-serif" transform="rotate(-90 12 %d)">%s</text>', H / 2, H / 2, y_label)
  for _, p in ipairs(points) do
    parts[#parts + 1] = string.format('<circle cx="%.1f" cy="%.1f" r="4" fill="#2a6fdb" fill-opacity="0.7"/>', sx(p[1]), sy(p[2]))
  end
  parts[#parts + 1] = "</svg>"
  return table.concat(parts, "\n")
end

-- Writes the report of the sweep in dir (runs/<sweep>); s: the parsed spec
-- (for the command of the best configuration), or nil.
function report.write(dir, s)
  local info = cjson.decode(files.read(dir .. "/sweep.json"))
  if not s and type(info.spec) == "string" and files.exists(info.spec) then
    local ok, loaded = pcall(spec_mod.load, info.spec) -- (--report alone: the spec the sweep ran, for the command)
    s = ok and loaded or nil
  end
  local last = runner.read_ledger(dir .. "/ledger.jsonl")
  local metric, goal = info.metric.name, info.metric.goal
  local trials, counts = {}, {}
  for id, e in pairs(last) do
    trials[#trials + 1] = e
    counts[e.state] = (counts[e.state] or 0) + 1
  end
  local better = function(a, b) if goal == "maximize" then return a > b end return a < b end
  table.sort(trials, function(a, b)
    if a.metric and b.metric then return better(a.metric, b.metric) end
    if a.metric or b.metric then return a.metric ~= nil end
    return a.trial < b.trial
  end)
  local params = info.parameters
  local function value_text(v) return v == nil and "-" or spec_mod.format_value(v) end
  local md = {"# Sweep " .. info.name, "",
              string.format("%d trials: %d finished, %d failed, %d stopped early, %d unfinished.", info.trials,
                            counts.finished or 0, counts.failed or 0, counts.stopped or 0,
                            info.trials - (counts.finished or 0) - (counts.failed or 0) - (counts.stopped or 0)), "",
              "## Trials (sorted by " .. metric .. ", " .. goal .. ")", "",
              "| trial | " .. table.concat(params, " | ") .. " | seed | state | " .. metric .. " |",
              "|---|" .. string.rep("---|", #params) .. "---|---|---|"}
  for _, e in ipairs(trials) do
    local cells = {}
    for i, p in ipairs(params) do cells[i] = value_text(e.params and e.params[p]) end
    md[#md + 1] = string.format("| %s | %s | %s | %s | %s |", e.trial, table.concat(cells, " | "), value_text(e.seed ~= cjson.null and e.seed or nil),
                                e.state .. (e.error and (": " .. tostring(e.error):gsub("|", "/")) or ""), e.metric and string.format("%.4f", e.metric) or "-")
  end
  -- per configuration, over seeds
  local groups, order = {}, {}
  for _, e in ipairs(trials) do
    if e.state == "finished" then
      local cells = {}
      for i, p in ipairs(params) do cells[i] = value_text(e.params[p]) end
      local key = table.concat(cells, " | ")
      if not groups[key] then groups[key] = {params = e.params, values = {}}; order[#order + 1] = key end
      table.insert(groups[key].values, e.metric)
    end
  end
  local rows = {}
  for _, key in ipairs(order) do
    local g = groups[key]
    local mean, sd = stats.mean_sd(g.values)
    rows[#rows + 1] = {key = key, mean = mean, sd = sd, n = #g.values, params = g.params}
  end
  table.sort(rows, function(a, b) return better(a.mean, b.mean) end)
  md[#md + 1] = ""
  md[#md + 1] = "## Configurations (mean and spread over seeds)"
  md[#md + 1] = ""
  md[#md + 1] = "| " .. table.concat(params, " | ") .. " | seeds | mean | sd |"
  md[#md + 1] = "|" .. string.rep("---|", #params) .. "---|---|---|"
  for _, r in ipairs(rows) do md[#md + 1] = string.format("| %s | %d | %.4f | %.4f |", r.key, r.n, r.mean, r.sd) end
  -- what the trials' pseudo-labels were worth at the end (kd.train.pseudo_probe), where they were probed
  local probed = {}
  for _, e in ipairs(trials) do
    if e.state == "finished" and C.is_dir(dir .. "/" .. e.trial) then
      local cells = {}
      for i, p in ipairs(params) do cells[i] = value_text(e.params[p]) end
      local key = table.concat(cells, " | ")
      for _, path in ipairs(files.find(dir .. "/" .. e.trial, "metrics.jsonl")) do
        for source, list in pairs(pseudo_probe.history(path:match("^(.*)/metrics%.jsonl$"))) do
          local g = probed[key] or {}
          probed[key] = g
          g[source] = g[source] or {accuracy = {}, coverage = {}, miou = {}}
          for _, field in ipairs({"accuracy", "coverage", "miou"}) do table.insert(g[source][field], list[#list][field]) end
        end
      end
    end
  end
  if next(probed) then
    md[#md + 1] = ""
    md[#md + 1] = "## Pseudo-labels at the end of training (kd.train.pseudo_probe; mean over seeds, %)"
    md[#md + 1] = ""
    md[#md + 1] = "| " .. table.concat(params, " | ") .. " | source | accuracy | coverage | mIoU |"
    md[#md + 1] = "|" .. string.rep("---|", #params) .. "---|---|---|---|"
    for _, r in ipairs(rows) do
      local sources = {}
      for source in pairs(probed[r.key] or {}) do sources[#sources + 1] = source end
      table.sort(sources)
      for _, source in ipairs(sources) do
        local f = probed[r.key][source]
        md[#md + 1] = string.format("| %s | %s | %.1f | %.1f | %.1f |", r.key, source, 100 * stats.mean_sd(f.accuracy),
                                    100 * stats.mean_sd(f.coverage), 100 * stats.mean_sd(f.miou))
      end
    end
  end
  if rows[1] then
    local overrides = {}
    for _, p in ipairs(params) do overrides[#overrides + 1] = p .. "=" .. value_text(rows[1].params[p]) end
    if s then
      local base = {}
      for k, v in pairs(s.base) do base[#base + 1] = k .. "=" .. spec_mod.format_value(v) end
      table.sort(base)
      for i = #base, 1, -1 do table.insert(overrides, 1, base[i]) end
    end
    local target = s and (s.config and ("train " .. s.config) or s.program) or "<experiment>"
    md[#md + 1] = ""
    md[#md + 1] = "## Best configuration"
    md[#md + 1] = ""
    md[#md + 1] = string.format("mean %s %.4f over %d seed(s):", metric, rows[1].mean, rows[1].n)
    md[#md + 1] = ""
    md[#md + 1] = "    kdseg " .. target .. " " .. table.concat(overrides, " ")
  end
  local md_text = table.concat(md, "\n") .. "\n"
  C.write_atomic(dir .. "/report.md", md_text)
  -- one plot per parameter
  local svgs = {}
  for _, p in ipairs(params) do
    local points, positive, numeric = {}, true, true
    for _, e in ipairs(trials) do
      if e.state == "finished" and e.params then
        local v = e.params[p]
        if type(v) ~= "number" then numeric = false end
        if type(v) == "number" and v <= 0 then positive = false end
        points[#points + 1] = {v, e.metric}
      end
    end
    if not numeric then -- categorical: values in order of appearance on an index axis
      local index, seen = {}, 0
      for _, pt in ipairs(points) do
        local key = tostring(pt[1])
        if not index[key] then seen = seen + 1; index[key] = seen end
        pt[1] = index[key]
      end
    end
    local min, max = math.huge, -math.huge
    for _, pt in ipairs(points) do min, max = math.min(min, pt[1]), math.max(max, pt[1]) end
    local svg = svg_scatter(metric .. " against " .. p, points, p, metric, numeric and positive and max / math.max(min, 1e-12) > 50)
    local file = "param_" .. p:gsub("[^%w_%-%.]", "_") .. ".svg"
    C.write_atomic(dir .. "/" .. file, svg .. "\n")
    svgs[#svgs + 1] = svg
  end
  local html = {"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sweep " .. info.name .. "</title>",
    "<style>body{font-family:sans-serif;margin:24px;max-width:1100px} pre{background:#f4f4f4;padding:8px;white-space:pre-wrap}</style></head><body>",
    "<h1>Sweep " .. info.name .. "</h1>", table.concat(svgs, "\n"), "<pre>" .. md_text:gsub("&", "&amp;"):gsub("<", "&lt;") .. "</pre></body></html>"}
  C.write_atomic(dir .. "/report.html", table.concat(html, "\n"))
  return dir .. "/report.md"
end

-- A Slurm job-array script: array task i runs trial i with the same command
-- (kdseg sweep SPEC --trial i), the ledger on the shared runs directory.
function report.slurm(s, out_dir, runs_dir)
  local trials = spec_mod.trials(s)
  files.mkdir_p(out_dir)
  local script = table.concat({
    "#!/bin/bash",
    "# Slurm job array for sweep " .. s.name .. ": array task i runs trial i.",
    "# Submit from the kdseg checkout (on shared storage): sbatch " .. out_dir .. "/" .. s.name .. ".slurm",
    "#SBATCH --job-name=" .. s.name,
    "#SBATCH --array=0-" .. (#trials - 1),
    "#SBATCH --cpus-per-task=" .. s.threads,
    "#SBATCH --output=" .. (runs_dir or "runs") .. "/" .. s.name .. "/slurm_%A_%a.out",
    "set -euo pipefail",
    "cd \"${SLURM_SUBMIT_DIR:-.}\"",
    string.format("exec %s sweep %s --trial \"$SLURM_ARRAY_TASK_ID\" --runs-dir %s", C.exe_path(), s.path, runs_dir or "runs"),
    "",
  }, "\n")
  local path = out_dir .. "/" .. s.name .. ".slurm"
  C.write_atomic(path, script)
  return path, #trials
end

return report
