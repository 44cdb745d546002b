-- kdseg splits: seeded semi-supervised splits of a dataset's fine training set.
--   kdseg splits --root data/synthcity --fractions 1/16,1/8,1/4,1/2 --seed 0
local argparse = require("argparse")
local splits = require("kd.data.splits")

return function(...)
  local parser = argparse("kdseg splits", "Write labeled/unlabeled split files (image label per line).")
  parser:option("--root", "Dataset root (Cityscapes layout)."):count(1)
  parser:option("--split", "Which split to divide.", "train")
  parser:option("--fractions", "Labeled fractions, comma separated.", "1/16,1/8,1/4,1/2")
  parser:option("--seed", "Seed of the shuffle.", "0"):convert(tonumber)
  parser:option("--out", "Output folder (default ROOT/splits).")
  local args = parser:parse({...})
  local fractions = {}
  for f in args.fractions:gmatch("[^,]+") do fractions[#fractions + 1] = f end
  local result = splits.write({root = args.root, split = args.split, fractions = fractions, seed = args.seed, out = args.out})
  local names = {}
  for name in pairs(result) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local r = result[name]
    print(string.format("%s: %d labeled, %d unlabeled -> %s", name, r.labeled, r.unlabeled, r.dir))
  end
end
