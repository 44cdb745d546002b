-- splits: semi-supervised split files in the common convention:
-- <out>/<fraction>/labeled.txt ("image label" per line, relative to the
-- dataset root) and unlabeled.txt (image paths), fractions 1/16, 1/8, ...
local Dataset = require("kd.data.dataset")
local files = require("kd.data.files")

local splits = {}

-- A small xorshift generator: the same shuffle for a seed on every machine.
local function generator(seed)
  local state = (seed * 2654435761 + 12345) % 4294967296
  if state == 0 then state = 1 end
  return function(n)
    state = bit.bxor(state, bit.lshift(state, 13))
    state = bit.bxor(state, bit.rshift(state, 17))
    state = bit.bxor(state, bit.lshift(state, 5))
    return (state % 4294967296) % n + 1
  end
end

function splits.parse_fraction(text)
  local a, b = tostring(text):match("^%s*(%d+)%s*[/_]%s*(%d+)%s*$")
  a, b = tonumber(a), tonumber(b)
  if not a or a < 1 or b < a then error("splits: fraction '" .. tostring(text) .. "' must look like 1/8", 0) end
  return a, b
end

-- write{root, split = "train", fractions = {"1/16", "1/8"}, seed = 0, out = root/splits}
-- -> {name = {labeled = n, unlabeled = m}}
function splits.write(options)
  local ds = Dataset({root = options.root, split = options.split or "train", labels = "fine"})
  local root = ds.root
  local out = options.out or (root .. "/splits")
  local result = {}
  for _, fraction in ipairs(options.fractions) do
    local a, b = splits.parse_fraction(fraction)
    local order = {}
    for i = 1, #ds.items do order[i] = i end
    local random = generator(options.seed or 0)
    for i = #order, 2, -1 do
      local j = random(i)
      order[i], order[j] = order[j], order[i]
    end
    local count = math.max(1, math.floor(#order * a / b + 0.5))
    local name = a .. "_" .. b
    local dir = out .. "/" .. name
    files.mkdir_p(dir)
    local labeled, unlabeled = {}, {}
    for k, i in ipairs(order) do
      local item = ds.items[i]
      local image = item.image:sub(#root + 2)
      if k <= count then labeled[#labeled + 1] = image .. " " .. item.label:sub(#root + 2)
      else unlabeled[#unlabeled + 1] = image end
    end
    table.sort(labeled)
    table.sort(unlabeled)
    kd._C.write_atomic(dir .. "/labeled.txt", table.concat(labeled, "\n") .. "\n")
    kd._C.write_atomic(dir .. "/unlabeled.txt", table.concat(unlabeled, "\n") .. (#unlabeled > 0 and "\n" or ""))
    result[name] = {labeled = #labeled, unlabeled = #unlabeled, dir = dir}
  end
  return result
end

return splits
