-- synthcity: the SynthCity dataset on disk (see core/data/synth.c for the scenes).
local C = require("kd._C")
local files = require("kd.data.files")

local synthcity = {}

-- The tiers of a dataset and the label files each gets.
local tiers = {
  {split = "train", count = "train", fine = true, coarse = true},
  {split = "val", count = "val", fine = true},
  {split = "train_extra", count = "coarse", coarse = true, true_fine = true},
  -- last, so that adding a test split changes no image of the others: a
  -- held-out set for final tables, while val chooses settings
  {split = "test", count = "test", fine = true},
}

-- write{root, train, coarse, val, test = 0, height, width, seed[, only = {split...}]}
-- -> number of images; only: write these splits alone (the others' images
-- are not written, and keep their indices: a test split added later)
function synthcity.write(options)
  local first, total = 0, 0
  local only = nil
  if options.only then
    only = {}
    for _, split in ipairs(options.only) do only[split] = true end
  end
  for _, tier in ipairs(tiers) do
    local count = options[tier.count] or 0
    if (count == 0 and tier.split == "test") or (only and not only[tier.split]) then -- no empty test folders
      first = first + count
      goto next_tier
    end
    local dirs = {"leftImg8bit"}
    if tier.fine then dirs[#dirs + 1] = "gtFine" end
    if tier.coarse then dirs[#dirs + 1] = "gtCoarse" end
    if tier.true_fine then dirs[#dirs + 1] = "gtFineTrue" end
    for _, d in ipairs(dirs) do files.mkdir_p(options.root .. "/" .. d .. "/" .. tier.split .. "/synth") end
    C.synthcity_write({root = options.root, split = tier.split, first = first, count = count,
                       height = options.height, width = options.width, seed = options.seed,
                       fine = tier.fine or false, coarse = tier.coarse or false, true_fine = tier.true_fine or false})
    first, total = first + count, total + count
    ::next_tier::
  end
  return total
end

return synthcity
