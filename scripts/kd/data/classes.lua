-- classes: class tables. A class table names the classes a network predicts
-- (train ids 0..K-1), the label ids that stand for them in label files, their
-- colours, and the ids that are ignored. Cityscapes' table is built in; a
-- user's own comes from YAML:
--   ignore_ids: [0, 255]            # optional: label ids mapped to ignore
--   classes:
--     - {name: background, id: 1, color: [0, 0, 0]}
--     - {name: cat, id: 2, color: [255, 0, 0]}
--   (each class may name a category, as Cityscapes' do: all or none; the
--   evaluation then also reports category IoU)
local classes = {}

local IGNORE = 255

-- Cityscapes, from the official labels.py: trainId = position (0-based).
local cityscapes = {
  {"road", 7, {128, 64, 128}}, {"sidewalk", 8, {244, 35, 232}}, {"building", 11, {70, 70, 70}},
  {"wall", 12, {102, 102, 156}}, {"fence", 13, {190, 153, 153}}, {"pole", 17, {153, 153, 153}},
  {"traffic light", 19, {250, 170, 30}}, {"traffic sign", 20, {220, 220, 0}},
  {"vegetation", 21, {107, 142, 35}}, {"terrain", 22, {152, 251, 152}}, {"sky", 23, {70, 130, 180}},
  {"person", 24, {220, 20, 60}}, {"rider", 25, {255, 0, 0}}, {"car", 26, {0, 0, 142}},
  {"truck", 27, {0, 0, 70}}, {"bus", 28, {0, 60, 100}}, {"train", 31, {0, 80, 100}},
  {"motorcycle", 32, {0, 0, 230}}, {"bicycle", 33, {119, 11, 32}},
}

-- The official evaluation's categories (labels.py's "category" of each
-- class; the void category holds only ignored labels).
local cityscapes_categories = {road = "flat", sidewalk = "flat", building = "construction", wall = "construction",
  fence = "construction", pole = "object", ["traffic light"] = "object", ["traffic sign"] = "object",
  vegetation = "nature", terrain = "nature", sky = "sky", person = "human", rider = "human", car = "vehicle",
  truck = "vehicle", bus = "vehicle", train = "vehicle", motorcycle = "vehicle", bicycle = "vehicle"}

-- A table from {name, id, color[, category]} entries: adds lut (label id + 1
-- -> train id) and palette (train id + 1 -> colour); with categories (all
-- entries or none have one), categories (names in order of appearance) and
-- category_of (train id + 1 -> category index).
function classes.make(entries, name)
  local t = {name = name, names = {}, ids = {}, colors = {}, ignore = IGNORE, lut = {}, palette = {}}
  for i = 1, 256 do t.lut[i] = IGNORE end
  local index = {}
  for i, e in ipairs(entries) do
    t.names[i], t.ids[i], t.colors[i] = e[1], e[2], e[3]
    t.lut[e[2] + 1] = i - 1
    t.palette[i] = e[3]
    if e[4] then
      t.categories, t.category_of = t.categories or {}, t.category_of or {}
      if not index[e[4]] then t.categories[#t.categories + 1] = e[4]; index[e[4]] = #t.categories end
      t.category_of[i] = index[e[4]]
    end
  end
  t.count = #entries
  if t.category_of and #t.category_of ~= t.count then
    error(string.format("classes %s: every class needs a category, or none (%d of %d have one)", tostring(name),
                        #t.category_of, t.count), 0)
  end
  return t
end

function classes.cityscapes()
  local entries = {}
  for i, e in ipairs(cityscapes) do entries[i] = {e[1], e[2], e[3], cityscapes_categories[e[1]]} end
  return classes.make(entries, "cityscapes")
end

-- The class table a config names: "cityscapes", the path of a YAML table,
-- or a table already made (data.classes of every config and script).
function classes.get(spec)
  if type(spec) == "table" then return spec end
  if spec == nil or spec == "cityscapes" then return classes.cityscapes() end
  if type(spec) ~= "string" then error("classes: expected 'cityscapes' or a YAML file, got " .. tostring(spec), 0) end
  return classes.load(spec)
end

local function fail(path, lines, tbl, key, what)
  local line = lines and lines[tbl] and lines[tbl][key]
  error(string.format("%s%s: %s", path, line and (":" .. line) or "", what), 0)
end

-- Reads a class table from a YAML file (see above); errors name the line.
function classes.load(path)
  local doc, lines = require("kd.infra.yaml").load_file(path)
  if type(doc) ~= "table" or type(doc.classes) ~= "table" or #doc.classes == 0 then
    error(path .. ": a class table needs a non-empty 'classes' list", 0)
  end
  for key in pairs(doc) do
    if key ~= "classes" and key ~= "ignore_ids" and key ~= "name" then fail(path, lines, doc, key, "unknown key '" .. key .. "'") end
  end
  if #doc.classes > 254 then fail(path, lines, doc, "classes", "at most 254 classes") end
  local entries, seen = {}, {}
  for i, c in ipairs(doc.classes) do
    if type(c) ~= "table" then fail(path, lines, doc.classes, i, "class " .. i .. " must be a mapping") end
    for key in pairs(c) do
      if key ~= "name" and key ~= "id" and key ~= "color" and key ~= "category" then
        fail(path, lines, c, key, "unknown key '" .. key .. "' in class " .. i)
      end
    end
    if type(c.name) ~= "string" then fail(path, lines, doc.classes, i, "class " .. i .. " needs a name") end
    if type(c.id) ~= "number" or c.id < 0 or c.id > 255 or c.id % 1 ~= 0 then
      fail(path, lines, c, "id", "class '" .. c.name .. "': id must be an integer 0..255")
    end
    if seen[c.id] then fail(path, lines, c, "id", "id " .. c.id .. " is used twice") end
    seen[c.id] = true
    local color = c.color or {(i * 67) % 256, (i * 131) % 256, (i * 29) % 256}
    if type(color) ~= "table" or #color ~= 3 then fail(path, lines, c, "color", "class '" .. c.name .. "': color must be [r, g, b]") end
    if c.category ~= nil and type(c.category) ~= "string" then fail(path, lines, c, "category", "category must be a name") end
    if (c.category ~= nil) ~= (doc.classes[1].category ~= nil) then
      fail(path, lines, doc.classes, i, "every class needs a category, or none")
    end
    entries[i] = {c.name, c.id, color, c.category}
  end
  if doc.name ~= nil and type(doc.name) ~= "string" then fail(path, lines, doc, "name", "name must be a string") end
  if doc.ignore_ids ~= nil and type(doc.ignore_ids) ~= "table" then
    fail(path, lines, doc, "ignore_ids", "ignore_ids must be a list of ids, e.g. [0, 255]")
  end
  local t = classes.make(entries, doc.name or path)
  for i, id in ipairs(doc.ignore_ids or {}) do
    if type(id) ~= "number" or id < 0 or id > 255 then fail(path, lines, doc.ignore_ids, i, "ignore id must be 0..255") end
    if seen[id] then fail(path, lines, doc.ignore_ids, i, "ignore id " .. id .. " is also a class id") end
    t.lut[id + 1] = IGNORE
  end
  return t
end

return classes
