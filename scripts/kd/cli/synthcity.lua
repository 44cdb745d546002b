-- kdseg synthcity: writes a SynthCity dataset in the Cityscapes layout.
--   kdseg synthcity --out data/synthcity --train 200 --coarse 800 --val 100 --size 128x256 --seed 1
-- train: images with fine (gtFine) and coarse (gtCoarse) labels; val: fine;
-- train_extra: coarse only, their true fine labels under gtFineTrue/ (never
-- read by training; for measuring pseudo-labels); test: fine, held out for
-- final results (settings are chosen on val). Scene indices do not
-- overlap between splits, and every scene depends only on (seed, index).
local argparse = require("argparse")
local data = require("kd.data")

return function(...)
  local parser = argparse("kdseg synthcity", "Write a synthetic street-scene dataset (Cityscapes layout).")
  parser:option("--out", "Output directory."):args(1):count(1)
  parser:option("--train", "Finely labeled training images.", "100"):convert(tonumber)
  parser:option("--coarse", "Coarse-only images (train_extra).", "400"):convert(tonumber)
  parser:option("--val", "Validation images.", "100"):convert(tonumber)
  parser:option("--test", "Test images (fine labels; for final tables only).", "0"):convert(tonumber)
  parser:option("--size", "Image size HxW.", "128x256")
  parser:option("--seed", "Seed of the dataset.", "1"):convert(tonumber)
  local args = parser:parse({...})
  local h, w = require("kd.cli").parse_size(args.size, "kdseg synthcity: --size")
  for _, key in ipairs({"train", "coarse", "val", "test", "seed"}) do
    if not args[key] or args[key] < 0 or args[key] % 1 ~= 0 then
      error("kdseg synthcity: --" .. key .. " must be a non-negative integer", 0)
    end
  end
  -- a typo of a few zeros would otherwise write for days
  local asked = args.train + args.coarse + args.val + args.test
  if asked > 1000000 then
    error("kdseg synthcity: at most 1000000 images in all; asked for " .. asked, 0)
  end
  local start = kd.clock()
  local total = data.synthcity.write({root = args.out, train = args.train, coarse = args.coarse, val = args.val, test = args.test,
                                      height = tonumber(h), width = tonumber(w), seed = args.seed})
  print(string.format("synthcity: %d images of %sx%s written to %s in %.1f s (seed %d)", total, h, w,
                      args.out, kd.clock() - start, args.seed))
end
