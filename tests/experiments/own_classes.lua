-- own_classes.lua ROOT: turns a SynthCity in ROOT into a dataset with a class
-- table of its own, as a user's data would come: six classes with other
-- label ids (3, 9, 14, 21, 40, 60), the unlabelled pixels stored as id 200
-- (an ignore id other than 255), label files as labelIds only. Writes the
-- table to ROOT/classes.yaml.
local root = assert(arg[1], "usage: own_classes.lua ROOT")
local ids = {3, 9, 14, 21, 40, 60}
local names = {"ground", "built", "plant", "air", "body", "vehicle"}
local city = kd.data.classes.cityscapes()
local to_own = {} -- Cityscapes label id + 1 -> own id: train id t goes to class t % 6
for i = 1, 256 do
  local t = city.lut[i]
  to_own[i] = t == 255 and 200 or ids[t % 6 + 1]
end
local changed = 0
for _, dir in ipairs({"gtFine", "gtCoarse", "gtFineTrue"}) do
  if kd._C.is_dir(root .. "/" .. dir) then
    for _, path in ipairs(kd.data.files.find(root .. "/" .. dir, ".png")) do
      if path:match("_labelTrainIds%.png$") then os.remove(path)
      elseif path:match("_labelIds%.png$") then
        kd.image.write(path, kd._C.map_values(kd.image.read(path), to_own))
        changed = changed + 1
      end
    end
  end
end
local lines = {"name: own", "ignore_ids: [200]", "classes:"}
for i, name in ipairs(names) do
  lines[#lines + 1] = string.format("  - {name: %s, id: %d, color: [%d, %d, %d]}", name, ids[i], 40 * i, 255 - 40 * i, 20 * i)
end
kd._C.write_atomic(root .. "/classes.yaml", table.concat(lines, "\n") .. "\n")
print(string.format("own classes: %d label files rewritten", changed))
