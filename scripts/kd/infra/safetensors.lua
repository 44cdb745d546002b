-- safetensors: kd.save and kd.load in the format of Hugging Face's
-- safetensors, so checkpoints move to and from PyTorch:
--   8 bytes      little-endian unsigned length N of the header
--   N bytes      JSON: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
--                       "__metadata__": {"key": "string value"}}
--   the data     each tensor's bytes at [b, e) from the end of the header
-- Saving writes to a temporary file, fsyncs and renames it: a kill at any
-- moment leaves the old file or the new one, never a torn one.
local cjson = require("cjson")
local C = require("kd._C")

local M = {}

local to_code = {float32 = "F32", int32 = "I32", uint8 = "U8", int64 = "I64"}
local from_code = {F32 = "float32", I32 = "int32", U8 = "uint8", I64 = "int64"}
local sizes = {F32 = 4, I32 = 4, U8 = 1, I64 = 8}

local function u64_le(n)
  local bytes = {}
  for i = 1, 8 do
    bytes[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(bytes)
end

local function json_string(s) return cjson.encode(s) end

-- kd.save(path, {name = tensor, ...}[, {key = "value"}])
function M.save(path, tensors, metadata)
  if type(path) ~= "string" then error("kd.save: path must be a string", 2) end
  if type(tensors) ~= "table" then error("kd.save: tensors must be a table of name -> tensor", 2) end
  local names = {}
  for name, t in pairs(tensors) do
    if type(name) ~= "string" then error("kd.save: tensor names must be strings, got " .. type(name), 2) end
    if name == "__metadata__" then error("kd.save: '__metadata__' is reserved", 2) end
    if not C.is_tensor(t) then error("kd.save: '" .. name .. "' is not a tensor", 2) end
    names[#names + 1] = name
  end
  table.sort(names)
  local entries, blobs, offset = {}, {}, 0
  if metadata ~= nil then
    if type(metadata) ~= "table" then error("kd.save: metadata must be a table of strings", 2) end
    local keys, parts = {}, {}
    for k, v in pairs(metadata) do
      if type(k) ~= "string" or type(v) ~= "string" then
        error("kd.save: metadata keys and values must be strings", 2)
      end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = json_string(k) .. ":" .. json_string(metadata[k]) end
    entries[#entries + 1] = '"__metadata__":{' .. table.concat(parts, ",") .. "}"
  end
  for _, name in ipairs(names) do
    local t = tensors[name]
    local bytes = t:bytes()
    entries[#entries + 1] = string.format('%s:{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}',
      json_string(name), to_code[t.dtype], table.concat(t.shape, ","), offset, offset + #bytes)
    blobs[#blobs + 1] = bytes
    offset = offset + #bytes
  end
  local header = "{" .. table.concat(entries, ",") .. "}"
  header = header .. string.rep(" ", (8 - #header % 8) % 8) -- align the data to 8 bytes
  C.write_atomic(path, u64_le(#header) .. header .. table.concat(blobs))
end

local function fail(path, why) error(string.format("kd.load: %s: %s", path, why), 3) end

-- kd.load(path) -> {name = tensor, ...}, metadata
function M.load(path)
  if type(path) ~= "string" then error("kd.load: path must be a string", 2) end
  local f, err = io.open(path, "rb")
  if not f then error("kd.load: cannot open " .. tostring(err), 2) end
  local data = f:read("*a")
  f:close()
  if not data then error("cannot read " .. path .. " (a folder?)", 0) end
  if #data < 8 then fail(path, string.format("truncated: %d bytes, shorter than the 8-byte header length", #data)) end
  local n = 0
  for i = 8, 1, -1 do n = n * 256 + data:byte(i) end
  if n > #data - 8 then fail(path, string.format("truncated: header of %.0f bytes, but only %d follow", n, #data - 8)) end
  local ok, header = pcall(cjson.decode, data:sub(9, 8 + n))
  if not ok or type(header) ~= "table" then fail(path, "malformed JSON header: " .. tostring(header)) end
  local base, available = 8 + n, #data - 8 - n
  local tensors, metadata = {}, {}
  for name, entry in pairs(header) do
    if name == "__metadata__" then
      if type(entry) ~= "table" then fail(path, "__metadata__ is not an object") end
      metadata = entry
    else
      if type(entry) ~= "table" then fail(path, "entry '" .. name .. "' is not an object") end
      local dtype = from_code[entry.dtype]
      if not dtype then fail(path, string.format("tensor '%s' has unsupported dtype %s", name, tostring(entry.dtype))) end
      local shape, count = entry.shape, 1
      if type(shape) ~= "table" or #shape > 4 then fail(path, "tensor '" .. name .. "' has a bad shape (at most 4 dims)") end
      for _, s in ipairs(shape) do
        if type(s) ~= "number" or s < 0 or s % 1 ~= 0 then fail(path, "tensor '" .. name .. "' has a bad shape") end
        count = count * s
      end
      if #shape == 0 then shape = {1} end
      local offsets = entry.data_offsets
      if type(offsets) ~= "table" or type(offsets[1]) ~= "number" or type(offsets[2]) ~= "number" then
        fail(path, "tensor '" .. name .. "' has no data_offsets")
      end
      local b, e = offsets[1], offsets[2]
      if b < 0 or e < b or e > available then
        fail(path, string.format("tensor '%s' data [%d, %d) lies outside the %d data bytes (truncated?)", name, b, e, available))
      end
      if e - b ~= count * sizes[entry.dtype] then
        fail(path, string.format("tensor '%s': %d bytes for %d %s values", name, e - b, count, dtype))
      end
      tensors[name] = C.from_bytes(data, dtype, shape, base + b)
    end
  end
  return tensors, metadata
end

return M
