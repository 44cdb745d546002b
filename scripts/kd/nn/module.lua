-- Module: the base of every layer and model. A module owns named parameters
-- (tensors that require grad), buffers (state saved with it but not trained,
-- like batch-norm running statistics) and child modules, each kept in
-- registration order so that names and state dicts are stable.
local kd = require("kd")
local class = require("kd.infra.class")

local Module = class("nn.Module")

function Module:__init()
  rawset(self, "_parameter_names", {})
  rawset(self, "_buffer_names", {})
  rawset(self, "_module_names", {})
  rawset(self, "training", true)
end

local function check_name(self, name, what)
  if type(name) ~= "string" or name == "" or name:find("%.") then
    error(string.format("%s: %s name must be a non-empty string without dots, got %s",
                        self.__name, what, tostring(name)), 3)
  end
end

function Module:register_parameter(name, tensor)
  check_name(self, name, "parameter")
  if not kd.is_tensor(tensor) then error(self.__name .. ": parameter '" .. name .. "' must be a tensor", 2) end
  tensor.requires_grad = true
  if self[name] == nil then table.insert(self._parameter_names, name) end
  self[name] = tensor
  return tensor
end

function Module:register_buffer(name, tensor)
  check_name(self, name, "buffer")
  if self[name] == nil then table.insert(self._buffer_names, name) end
  self[name] = tensor
  return tensor
end

function Module:add_module(name, module)
  check_name(self, name, "module")
  if not class.is_instance(module, Module) then
    error(string.format("%s: child '%s' is not an nn.Module", self.__name, name), 2)
  end
  if self[name] == nil then table.insert(self._module_names, name) end
  self[name] = module
  return module
end

function Module:children()
  local list = {}
  for _, name in ipairs(self._module_names) do list[#list + 1] = self[name] end
  return list
end

function Module:named_children()
  local list = {}
  for _, name in ipairs(self._module_names) do list[#list + 1] = {name, self[name]} end
  return list
end

-- {{"layer1.conv.weight", tensor}, ...} in registration order, depth first.
function Module:named_parameters(prefix, out)
  prefix, out = prefix or "", out or {}
  for _, name in ipairs(self._parameter_names) do out[#out + 1] = {prefix .. name, self[name]} end
  for _, name in ipairs(self._module_names) do self[name]:named_parameters(prefix .. name .. ".", out) end
  return out
end

function Module:parameters()
  local list = {}
  for i, pair in ipairs(self:named_parameters()) do list[i] = pair[2] end
  return list
end

function Module:named_buffers(prefix, out)
  prefix, out = prefix or "", out or {}
  for _, name in ipairs(self._buffer_names) do out[#out + 1] = {prefix .. name, self[name]} end
  for _, name in ipairs(self._module_names) do self[name]:named_buffers(prefix .. name .. ".", out) end
  return out
end

-- name -> tensor for parameters and buffers; the tensors are the module's own
-- (saving copies nothing, loading copies into them).
function Module:state_dict()
  local state = {}
  for _, pair in ipairs(self:named_parameters()) do state[pair[1]] = pair[2] end
  for _, pair in ipairs(self:named_buffers()) do state[pair[1]] = pair[2] end
  return state
end

-- Files written before kdseg numbered Sequential children from 0 (as
-- PyTorch does) have every numeric part of a name one higher: "stem.1.weight"
-- for today's "stem.0.weight". Numeric parts name nothing but Sequential
-- children, so the old names map back one to one.
local function renamed_from_one_based(state)
  local renamed = {}
  for name, tensor in pairs(state) do
    local parts = {}
    for part in name:gmatch("[^.]+") do
      parts[#parts + 1] = part:match("^%d+$") and tostring(tonumber(part) - 1) or part
    end
    renamed[table.concat(parts, ".")] = tensor
  end
  return renamed
end

-- A batch norm's num_batches_tracked counts training batches and feeds no
-- number (kdseg's momentum is always set); files from before kdseg kept it,
-- and PyTorch's own older files, lack it. Its absence is not an error.
local function optional(name) return name:match("num_batches_tracked$") ~= nil end

local function key_differences(own, state)
  local missing, unexpected = {}, {}
  for name in pairs(own) do if state[name] == nil and not optional(name) then missing[#missing + 1] = name end end
  for name in pairs(state) do if own[name] == nil then unexpected[#unexpected + 1] = name end end
  return missing, unexpected
end

-- Copies values from state into the module's tensors. strict (the default)
-- makes missing and unexpected keys an error counting them; returns the
-- lists of missing and unexpected keys.
function Module:load_state_dict(state, options)
  local strict = not (options and options.strict == false)
  if type(state) ~= "table" then error("load_state_dict: state must be a table of tensors", 2) end
  local own = self:state_dict()
  local missing, unexpected = key_differences(own, state)
  local old_names = false
  if #missing > 0 or #unexpected > 0 then
    local renamed = renamed_from_one_based(state)
    local m2, u2 = key_differences(own, renamed)
    -- the closer reading: an old file with one wrong key names that key
    if #m2 + #u2 < #missing + #unexpected then state, missing, unexpected, old_names = renamed, m2, u2, true end
  end
  table.sort(missing)
  table.sort(unexpected)
  if strict and (#missing > 0 or #unexpected > 0) then
    -- the first few of each: a wrong file misses every key, hundreds of them
    local function some(list)
      local shown = {}
      for i = 1, math.min(#list, 6) do shown[i] = list[i] end
      return "[" .. table.concat(shown, ", ") .. (#list > 6 and string.format(", ... (%d in all)", #list) or "") .. "]"
    end
    error(string.format("load_state_dict: %d missing keys %s; %d unexpected keys %s%s", #missing, some(missing),
                        #unexpected, some(unexpected), old_names and
                        " (the state's names read as an older kdseg's, whose Sequential counted from 1)" or ""), 2)
  end
  for name, tensor in pairs(own) do
    local value = state[name]
    if value ~= nil then
      if not kd.is_tensor(value) then error("load_state_dict: '" .. name .. "' is not a tensor", 2) end
      if table.concat(value.shape, "x") ~= table.concat(tensor.shape, "x") then
        error(string.format("load_state_dict: '%s' has shape %s in the state, %s in the module", name,
                            table.concat(value.shape, "x"), table.concat(tensor.shape, "x")), 2)
      end
      if value.dtype ~= tensor.dtype then value = value:to(tensor.dtype) end
      tensor:copy_(value)
    end
  end
  return missing, unexpected
end

function Module:train(mode)
  mode = mode ~= false
  rawset(self, "training", mode)
  for _, child in ipairs(self:children()) do child:train(mode) end
  return self
end

function Module:eval() return self:train(false) end

function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
end

function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

function Module:forward()
  error(self.__name .. ": forward is not defined", 2)
end

function Module:__call(...) return self:forward(...) end

-- One line for the module itself; containers print their children indented.
function Module:extra_repr() return "" end

function Module:__tostring()
  local head = self.__name .. "(" .. self:extra_repr() .. ")"
  local names = self._module_names
  if #names == 0 then return head end
  local lines = {self.__name .. "("}
  for _, name in ipairs(names) do
    local child = tostring(self[name]):gsub("\n", "\n  ")
    lines[#lines + 1] = "  (" .. name .. "): " .. child
  end
  lines[#lines + 1] = ")"
  return table.concat(lines, "\n")
end

return Module
