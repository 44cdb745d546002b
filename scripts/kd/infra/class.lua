-- class: minimal classes with single inheritance, as in torch.class.
--   local Linear = kd.class("Linear", Module)
--   function Linear:__init(...) Module.__init(self) ... end
--   local layer = Linear(...)       -- calls __init
-- Metamethods defined on a class (__tostring, __call) apply to its instances.
-- (LuaJIT follows Lua 5.1: # of a table ignores __len, so sizes are methods.)
local function class(name, parent)
  local cls = {}
  cls.__index = cls
  cls.__name = name
  cls.__parent = parent
  if parent then
    for _, mm in ipairs({"__tostring", "__call"}) do
      if rawget(cls, mm) == nil and parent[mm] then cls[mm] = parent[mm] end
    end
  end
  setmetatable(cls, {
    __index = parent,
    __call = function(c, ...)
      local obj = setmetatable({}, c)
      if c.__init then c.__init(obj, ...) end
      return obj
    end,
    __tostring = function() return "class " .. name end,
  })
  return cls
end

-- Whether obj is an instance of cls or of a subclass.
local function is_instance(obj, cls)
  local mt = getmetatable(obj)
  while mt do
    if mt == cls then return true end
    mt = rawget(mt, "__parent")
  end
  return false
end

return setmetatable({is_instance = is_instance}, {__call = function(_, ...) return class(...) end})
