-- kdseg train CONFIG [key=value ...] [--resume | --overwrite]: trains from a
-- Lua, YAML or JSON config; key=value overrides any field (dotted paths for
-- nested ones). --resume continues the run of that name, --overwrite
-- replaces it; without either, a name already used is refused.
return function(...)
  local args = {...}
  local path, overrides, resume, overwrite = nil, {}, false, false
  for _, a in ipairs(args) do
    if a == "--resume" then resume = true
    elseif a == "--overwrite" then overwrite = true
    elseif a == "--help" or a == "-h" then
      print("usage: kdseg train CONFIG [key=value ...] [--resume | --overwrite]")
      print("  CONFIG: a .lua file returning a table, a .yaml or a .json file; see scripts/kd/train/defaults.lua")
      print("  --resume continues the run of the config's name, --overwrite replaces it")
      return
    elseif a:find("=", 1, true) then overrides[#overrides + 1] = a
    elseif not path then path = a
    else error("kdseg train: unexpected argument '" .. a .. "'", 0) end
  end
  if resume and overwrite then error("kdseg train: --resume and --overwrite exclude each other", 0) end
  if not path then error("kdseg train: a config file is required (kdseg train CONFIG [key=value ...])", 0) end
  local cfg = kd.train.Trainer.resolve(kd.config.load(path), path)
  for _, o in ipairs(overrides) do kd.config.override(cfg, o) end
  local results = kd.train.run(cfg, {resume = resume, overwrite = overwrite})
  if not kd.dist.is_main() then return end
  print(string.format("%s: final mIoU %.2f (best %.2f at iteration %d); %s/%s/report.html", results.name,
                      100 * results.final_miou, 100 * results.best_miou, results.best_iteration, cfg.runs_dir, results.name))
end
