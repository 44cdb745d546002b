-- safetensors: a file written byte by byte from the format's specification
-- is read; state dicts round-trip; truncated and malformed files are errors.
local h = require("harness")
local T = {}

local dir = os.getenv("TMPDIR") or "/tmp"
local function tmp(name) return string.format("%s/kdseg-test-%d-%s", dir, kd._C.getpid(), name) end

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local function le32_float(bits) -- little-endian bytes of an IEEE float given as its bits
  local out = {}
  for i = 1, 4 do out[i] = string.char(bits % 256); bits = math.floor(bits / 256) end
  return table.concat(out)
end

function T.reads_a_file_made_from_the_spec()
  -- header: {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
  --          "b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]},"__metadata__":{"k":"v"}}
  local header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' ..
                 '"b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]},"__metadata__":{"k":"v"}}'
  local n = #header
  local length = string.char(n % 256, math.floor(n / 256) % 256, 0, 0, 0, 0, 0, 0)
  -- 1.0 = 0x3F800000, -2.0 = 0xC0000000, int32 7
  local data = le32_float(0x3F800000) .. le32_float(0xC0000000) .. string.char(7, 0, 0, 0)
  local path = tmp("spec.safetensors")
  write(path, length .. header .. data)
  local t, meta = kd.load(path)
  h.eq(t.a:get(1), 1, "a[1]")
  h.eq(t.a:get(2), -2, "a[2]")
  h.eq(t.b.dtype, "int32", "b dtype")
  h.eq(table.concat(t.b.shape, "x"), "1x1", "b shape")
  h.eq(t.b:get(1), 7, "b value")
  h.eq(meta.k, "v", "metadata")
  os.remove(path)
end

function T.writes_what_the_spec_says()
  local path = tmp("out.safetensors")
  kd.save(path, {x = kd.tensor({1, -2})})
  local f = assert(io.open(path, "rb"))
  local bytes = f:read("*a")
  f:close()
  local n = bytes:byte(1) + 256 * bytes:byte(2)
  h.eq(n % 8, 0, "header padded to 8 bytes")
  local header = bytes:sub(9, 8 + n)
  h.truthy(header:find('"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}', 1, true), header)
  h.eq(bytes:sub(9 + n, 12 + n), le32_float(0x3F800000), "data starts after the header")
  h.eq(#bytes, 8 + n + 8, "total size")
  os.remove(path)
end

function T.state_dict_round_trip()
  local net = kd.nn.Sequential(kd.nn.Conv2d(3, 4, 3), kd.nn.BatchNorm2d(4))
  local path = tmp("net.safetensors")
  kd.save(path, net:state_dict(), {epoch = "3"})
  local other = kd.nn.Sequential(kd.nn.Conv2d(3, 4, 3), kd.nn.BatchNorm2d(4))
  local loaded, meta = kd.load(path)
  other:load_state_dict(loaded)
  h.eq((other:get(1).weight - net:get(1).weight):sum_squares(), 0, "weights round-trip")
  h.eq(meta.epoch, "3", "metadata round-trip")
  os.remove(path)
end

function T.bad_files_are_errors()
  local path = tmp("bad.safetensors")
  kd.save(path, {x = kd.ones({4})})
  local f = assert(io.open(path, "rb"))
  local good = f:read("*a")
  f:close()
  write(path, good:sub(1, #good - 3))
  h.raises(function() kd.load(path) end, "kd.load", "outside the 13 data bytes")
  write(path, good:sub(1, 5))
  h.raises(function() kd.load(path) end, "truncated: 5 bytes")
  write(path, string.char(200, 0, 0, 0, 0, 0, 0, 0) .. "{}")
  h.raises(function() kd.load(path) end, "header of 200 bytes")
  write(path, string.char(0, 0, 0, 0, 0, 0, 0, 128) .. "{}") -- 2^63: named as a length, not wrapped negative
  h.raises(function() kd.load(path) end, "header of 9223372036854775808 bytes")
  write(path, string.char(4, 0, 0, 0, 0, 0, 0, 0) .. "{no}")
  h.raises(function() kd.load(path) end, "malformed JSON header")
  local bad = '{"x":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}'
  write(path, string.char(#bad, 0, 0, 0, 0, 0, 0, 0) .. bad .. "ab")
  h.raises(function() kd.load(path) end, "unsupported dtype F16")
  bad = '{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}}'
  write(path, string.char(#bad, 0, 0, 0, 0, 0, 0, 0) .. bad .. "abcd")
  h.raises(function() kd.load(path) end, "4 bytes for 3 float32 values")
  h.raises(function() kd.load(tmp("missing")) end, "cannot open", "No such file")
  h.raises(function() kd.save(path, {x = 1}) end, "'x' is not a tensor")
  h.raises(function() kd.save(dir .. "/no/such/dir/x.safetensors", {}) end, "cannot write")
  os.remove(path)
end

return T
