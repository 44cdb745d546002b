-- yaml: YAML documents as Lua tables (libyaml underneath).
--   local value, lines = kd.yaml.load_file("spec.yaml")
-- lines[t][key] is the line of key in table t, for error messages.
local C = require("kd._C")

local yaml = {}

function yaml.load(text, name) return C.yaml_load(text, name or "yaml") end

function yaml.load_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot open " .. tostring(err), 2) end
  local text = f:read("*a")
  f:close()
  if not text then error("cannot read " .. path .. " (a folder?)", 0) end
  return C.yaml_load(text, path)
end

return yaml
