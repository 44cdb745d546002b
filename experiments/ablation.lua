-- Ablation of the method: fine labels only / + pseudo-labels (one cycle) /
-- + self-correction (K cycles) / + pixel KD / + pair-wise KD / + holistic
-- KD (weight 0.1, the structured-distillation paper's) / + mutual learning,
-- each over several seeds; writes runs/<name>/ablation.md with the
-- students' mIoU as mean and spread (sample standard deviation).
--   kdseg experiments/ablation.lua [seeds=[1,2,3]] [key=value ...] [--resume | --overwrite]   (keys: kd.semisup.defaults)
-- Each variant and seed is a kd.semisup run of its own in runs/<name>/:
-- --resume goes on where a killed ablation stopped.
local semisup = require("kd.method.semisup")

local base = kd.config.copy(semisup.defaults)
base.name, base.seeds = "ablation", {1, 2, 3}
local flags = kd.config.arguments(arg, base, {"resume", "overwrite"})
local dir = kd.train.rundir.path(base.runs_dir, base.name, "ablation")
kd.train.rundir.claim(dir, flags)
local seeds = base.seeds
base.seeds = nil
local K = math.max(2, base.cycles.count)
local none = {ce = 1, pseudo = 0, pixel_kd = 0, pairwise = 0, mutual = 0, strong = 0, holistic = 0}
local function weights(extra)
  local w = kd.config.copy(none)
  for k, v in pairs(extra) do w[k] = v end
  return w
end
local variants = {
  {"fine labels only", 0, weights({})},
  {"+ pseudo-labels (1 cycle)", 1, weights({pseudo = 1})},
  {"+ self-correction (" .. K .. " cycles)", K, weights({pseudo = 1})},
  {"+ pixel KD", K, weights({pseudo = 1, pixel_kd = 1})},
  {"+ pair-wise KD", K, weights({pseudo = 1, pixel_kd = 1, pairwise = 1})},
  {"+ holistic KD", K, weights({pseudo = 1, pixel_kd = 1, pairwise = 1, holistic = 0.1})},
  {"+ mutual learning", K, weights({pseudo = 1, pixel_kd = 1, pairwise = 1, holistic = 0.1, mutual = 1})},
}
local rows = {"| variant | student mIoU (mean ± sd over " .. #seeds .. " seeds) |", "|---|---|"}
for v, variant in ipairs(variants) do
  local values = {}
  for _, seed in ipairs(seeds) do
    local cfg = kd.config.copy(base)
    cfg.name = string.format("%s/v%d_seed%d", base.name, v, seed)
    cfg.seed, cfg.cycles.count, cfg.students.weights = seed, variant[2], variant[3]
    cfg.baselines = {fine_only = false, all_labels = false}
    local r = semisup.run(cfg, {resume = flags.resume})
    local sum = 0
    for _, s in ipairs(r.students) do sum = sum + s.miou end
    values[#values + 1] = 100 * sum / #r.students
  end
  local mean, sd = require("kd.infra.stats").mean_sd(values)
  rows[#rows + 1] = string.format("| %s | %.2f ± %.2f |", variant[1], mean, sd)
end
local md = table.concat(rows, "\n")
kd.train.rundir.release(dir)
if kd.dist.is_main() then
  kd._C.write_atomic(dir .. "/ablation.md", md .. "\n")
  print(md)
end
