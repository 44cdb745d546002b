-- yaml: YAML documents as Lua tables (libyaml underneath).
--   local value, lines = kd.yaml.load_file("spec.yaml")
-- lines[t][key] is the line of key in table t, for error messages.
local C = require("kd._C")

local yaml = {}

function yaml.load(text, name) return C.yaml_load(text, name or "yaml") end

function yaml.load_file(path)
  return C.yaml_load(require("kd.data.files").read(path, 2), path)
end

return yaml
