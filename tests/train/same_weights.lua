-- same_weights.lua A B: every weights file under A/ (recursively; state
-- files too) has a twin under B/ with bit-identical tensors. Prints
-- "identical N" or the first difference; exits 1 when they differ.
local a, b = arg[1], arg[2]
local C = kd._C
local function walk(dir, rel, out)
  for _, name in ipairs(C.listdir(dir)) do
    local path, r = dir .. "/" .. name, rel == "" and name or (rel .. "/" .. name)
    if C.is_dir(path) then walk(path, r, out) elseif name:match("%.safetensors$") then out[#out + 1] = r end
  end
  return out
end
local list = walk(a, "", {})
if #list == 0 then print("no weights under " .. a) os.exit(1) end
for _, rel in ipairs(list) do
  local x, y = kd.load(a .. "/" .. rel), kd.load(b .. "/" .. rel)
  for name, t in pairs(x) do
    local u = y[name]
    if not u then print(rel .. ": " .. name .. " missing in " .. b) os.exit(1) end
    local p, q = t:flat(), u:flat()
    for i = 1, #p do
      if p[i] ~= q[i] then print(string.format("%s: %s differs at %d: %.9g against %.9g", rel, name, i, p[i], q[i])) os.exit(1) end
    end
  end
end
print("identical " .. #list)
