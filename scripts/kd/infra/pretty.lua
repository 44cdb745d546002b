-- pretty: printing of tensors and tables for tostring and the REPL. Large
-- tensors are abridged: the first and last few values of each row.
local pretty = {}

local EDGE = 3 -- values shown at each end of an abridged row

local function format_number(v, integer)
  if integer then return string.format("%d", v) end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
  return string.format("%.4g", v)
end

function pretty.tensor(t)
  local shape, n = t.shape, t:numel()
  local integer = t.dtype ~= "float32"
  local width = shape[#shape]
  local rows = n / math.max(width, 1)
  local values = t:flat()
  local lines = {}
  local function row(r)
    local parts = {}
    local base = (r - 1) * width
    if width > 2 * EDGE + 1 then
      for i = 1, EDGE do parts[#parts + 1] = format_number(values[base + i], integer) end
      parts[#parts + 1] = "..."
      for i = width - EDGE + 1, width do parts[#parts + 1] = format_number(values[base + i], integer) end
    else
      for i = 1, width do parts[#parts + 1] = format_number(values[base + i], integer) end
    end
    return " " .. table.concat(parts, "  ")
  end
  if n > 0 then
    if rows > 2 * EDGE + 1 then
      for r = 1, EDGE do lines[#lines + 1] = row(r) end
      lines[#lines + 1] = " ..."
      for r = rows - EDGE + 1, rows do lines[#lines + 1] = row(r) end
    else
      for r = 1, rows do lines[#lines + 1] = row(r) end
    end
  end
  local flags = ""
  if t.requires_grad then flags = t.is_leaf and ", requires_grad" or ", grad_fn" end
  lines[#lines + 1] = string.format("[kd.Tensor %s of %s%s]", t.dtype, table.concat(shape, "x"), flags)
  return table.concat(lines, "\n")
end

-- A table printed as Lua source, nested to a few levels.
function pretty.value(v, indent, seen)
  indent, seen = indent or "", seen or {}
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  if #indent > 8 then return "{...}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return type(a) < type(b)
  end)
  if #keys == 0 then return "{}" end
  local parts, inner = {}, indent .. "  "
  for i, k in ipairs(keys) do
    if i > 40 then parts[#parts + 1] = inner .. "... (" .. (#keys - 40) .. " more)"; break end
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. pretty.value(k) .. "]"
    if type(k) == "number" and k == i then key = nil end
    local text = pretty.value(v[k], inner, seen)
    if type(v[k]) == "userdata" and kd and kd.is_tensor(v[k]) then
      text = string.format("[kd.Tensor %s of %s]", v[k].dtype, table.concat(v[k].shape, "x"))
    end
    parts[#parts + 1] = inner .. (key and key .. " = " or "") .. text
  end
  seen[v] = nil -- only ancestors count: a table shared by two fields prints twice
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

return pretty
