-- Dataset: images (and label files) in the Cityscapes layout or from a split
-- list, read through the class table into train ids.
--   kd.data.Dataset{root = "data/synthcity", split = "train", labels = "fine"}
--   kd.data.Dataset{root = ..., list = "splits/1_8/labeled.txt"}
-- labels: "fine" (gtFine, labelTrainIds where present, else labelIds),
-- "coarse" (gtCoarse), "none" (the unlabeled tier), "true_fine" (gtFineTrue:
-- SynthCity's hidden truth of coarse-only images, for measuring only).
-- classes: "cityscapes" (default), a class table, or a YAML file of one.
-- Images are PNG or JPEG (..._leftImg8bit.png or .jpg in the layout, any
-- path in a list); label maps are PNG only (JPEG's loss changes label values).
local C = require("kd._C")
local class = require("kd.infra.class")
local files = require("kd.data.files")
local classes = require("kd.data.classes")

local Dataset = class("data.Dataset")

local label_dirs = {
  fine = {"gtFine", {"_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"}},
  coarse = {"gtCoarse", {"_gtCoarse_labelTrainIds.png", "_gtCoarse_labelIds.png"}},
  true_fine = {"gtFineTrue", {"_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"}},
}

local function check_options(options)
  local known = {root = true, split = true, labels = true, list = true, classes = true}
  for key in pairs(options) do
    if not known[key] then error("data.Dataset: unknown option '" .. tostring(key) .. "'", 3) end
  end
  if type(options.root) ~= "string" then error("data.Dataset: 'root' (the dataset folder) is required", 3) end
end

-- The label file for an image of the layout, or nil; and whether it holds train ids.
local function label_for(root, image, kind)
  local dir, suffixes = label_dirs[kind][1], label_dirs[kind][2]
  local rel = image:sub(#root + 2)
  local stem = rel:match("^leftImg8bit/(.*)_leftImg8bit%.png$") or rel:match("^leftImg8bit/(.*)_leftImg8bit%.jpe?g$")
  if not stem then return nil end
  for i, suffix in ipairs(suffixes) do
    local path = root .. "/" .. dir .. "/" .. stem .. suffix
    if files.exists(path) then return path, i == 1 end
  end
  return nil
end

local function read_list(root, list)
  local items, n = {}, 0
  local text = files.read(list)
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    if line:match("%S") then
      local image, label = line:match("^%s*(%S+)%s+(%S+)%s*$")
      image = image or line:match("^%s*(%S+)%s*$")
      if not image then error(string.format("%s:%d: expected 'image [label]', got '%s'", list, n, line), 0) end
      local item = {image = root .. "/" .. image, label = label and (root .. "/" .. label) or nil}
      for _, path in ipairs({item.image, item.label}) do
        if not files.exists(path) then error(string.format("%s:%d: %s does not exist", list, n, path), 0) end
      end
      items[#items + 1] = item
    end
  end
  return items
end

function Dataset:__init(options)
  check_options(options)
  self.root = options.root:gsub("/+$", "")
  self.kind = options.labels or (options.list and "list" or "fine")
  local c = options.classes or "cityscapes"
  self.classes = classes.get(c)
  if options.list then
    self.items = read_list(self.root, options.list)
    self.source = options.list
  else
    self.split = options.split or "train"
    if self.kind ~= "none" and not label_dirs[self.kind] then
      error("data.Dataset: labels must be 'fine', 'coarse', 'none' or 'true_fine', got " .. tostring(self.kind), 0)
    end
    local dir = self.root .. "/leftImg8bit/" .. self.split
    if not C.is_dir(dir) then error("data.Dataset: no folder " .. dir, 0) end
    self.items = {}
    local images = files.find(dir, "_leftImg8bit.png") -- the layout's PNG images, and JPEG ones
    for _, suffix in ipairs({"_leftImg8bit.jpg", "_leftImg8bit.jpeg"}) do
      for _, image in ipairs(files.find(dir, suffix)) do images[#images + 1] = image end
    end
    table.sort(images)
    for _, image in ipairs(images) do
      local item = {image = image}
      if self.kind ~= "none" then
        item.label, item.train_ids = label_for(self.root, image, self.kind)
        if not item.label then error("data.Dataset: no " .. self.kind .. " label for " .. image, 0) end
      end
      self.items[#self.items + 1] = item
    end
    self.source = dir
  end
  if #self.items == 0 then error("data.Dataset: no images in " .. self.source, 0) end
  for i, item in ipairs(self.items) do
    item.name = item.image:match("([^/]+)_leftImg8bit%.[%a]+$") or item.image:match("([^/]+)%.[%a]+$") or tostring(i)
    if item.label and item.train_ids == nil then item.train_ids = item.label:find("TrainIds", 1, true) ~= nil end
  end
  -- one lookup table for the whole set: train-id files map to themselves
  local first = nil
  for _, item in ipairs(self.items) do
    if item.label then
      if first == nil then first = item.train_ids end
      if item.train_ids ~= first then error("data.Dataset: " .. self.source .. " mixes labelIds and labelTrainIds files", 0) end
    end
  end
  self.train_id_files = first or false
end

function Dataset:size() return #self.items end

-- The lookup table from file values to train ids (256 entries).
function Dataset:label_map()
  if not self.train_id_files then return self.classes.lut end
  local identity = {}
  for i = 1, 256 do identity[i] = (i - 1 < self.classes.count) and (i - 1) or 255 end
  return identity
end

-- image (uint8 3 x H x W) and label (uint8 H x W train ids, or nil) of item i.
function Dataset:get(i)
  local item = self.items[i]
  if not item then error(string.format("data.Dataset: index %s outside 1..%d", tostring(i), #self.items), 2) end
  local image = C.image_read(item.image, true)
  if image:size(1) == 1 then image = kd.concat({image:to("float32"):view(1, 1, image:size(2), image:size(3))}) end
  local label = item.label and self:read_label(item) or nil
  if label then label = label:view(label:size(2), label:size(3)) end
  return image, label
end

-- An item's label file as train ids (uint8 1 x H x W).
function Dataset:read_label(item)
  return C.map_values(C.image_read(item.label), self:label_map())
end

-- The labelled pixels of every class over the whole set: a table of
-- classes.count counts (1-based), read from the label files alone: the
-- confusion of the labels with a prediction of class 0 everywhere counts
-- each class in its row's first column (ignored pixels count nowhere).
function Dataset:class_pixels()
  local k = self.classes.count
  local matrix = kd.zeros({k, k}, "int64")
  for _, item in ipairs(self.items) do
    if item.label then
      local label = self:read_label(item)
      C.confusion_update(matrix, kd.zeros(label.shape, "uint8"), label)
    end
  end
  local flat, counts = matrix:flat(), {}
  for c = 1, k do counts[c] = flat[(c - 1) * k + 1] end
  return counts
end

-- A dataset of given items ({image, label, train_ids}) - for sets that
-- programs compose, such as fine plus pseudo-labelled images.
function Dataset.from_items(items, classes, train_id_files)
  local ds = setmetatable({items = items, classes = classes, train_id_files = train_id_files or false,
                           source = "items", root = ""}, Dataset)
  return ds
end

-- A loader over this dataset (see kd.data.Loader).
function Dataset:loader(options)
  return require("kd.data.loader")(self, options)
end

return Dataset
