-- Layers without parameters: activations, dropout, pooling, resizing, identity.
local kd = require("kd")
local class = require("kd.infra.class")
local Module = require("kd.nn.module")

local ReLU = class("nn.ReLU", Module)
function ReLU:forward(x) return kd.relu(x) end

local ReLU6 = class("nn.ReLU6", Module)
function ReLU6:forward(x) return kd.relu6(x) end

local LeakyReLU = class("nn.LeakyReLU", Module)
function LeakyReLU:__init(slope)
  Module.__init(self)
  self.slope = slope or 0.01
  if type(self.slope) ~= "number" then error("nn.LeakyReLU: slope must be a number", 2) end
end
function LeakyReLU:forward(x) return kd.leaky_relu(x, self.slope) end
function LeakyReLU:extra_repr() return tostring(self.slope) end

local Identity = class("nn.Identity", Module)
function Identity:forward(x) return x end

-- Dropout2d(p): zeroes whole channels in training, nothing in evaluation.
local Dropout2d = class("nn.Dropout2d", Module)
function Dropout2d:__init(p)
  Module.__init(self)
  self.p = p or 0.5
  if type(self.p) ~= "number" or self.p < 0 or self.p >= 1 then
    error("nn.Dropout2d: p must be a number in [0, 1), got " .. tostring(p), 2)
  end
end
function Dropout2d:forward(x)
  if not self.training or self.p == 0 then return x end
  return kd.dropout2d(x, self.p)
end
function Dropout2d:extra_repr() return "p " .. self.p end

-- MaxPool2d / AvgPool2d (kernel[, {stride = kernel, padding = 0, ceil_mode = false}]);
-- AvgPool2d also takes count_include_pad (true), as PyTorch's.
local function pool_class(name, fn)
  local cls = class(name, Module)
  function cls:__init(kernel, options)
    Module.__init(self)
    if kernel == nil then error(name .. ": kernel is required", 2) end
    options = options or {}
    self.options = {kernel = kernel, stride = options.stride, padding = options.padding, ceil_mode = options.ceil_mode,
                    count_include_pad = options.count_include_pad}
  end
  function cls:forward(x) return fn(x, self.options) end
  function cls:extra_repr()
    local k = self.options.kernel
    return type(k) == "table" and (k[1] .. "x" .. k[2]) or tostring(k)
  end
  return cls
end

-- Upsample({scale = 8} or {size = {h, w}}[, mode = "bilinear" | "nearest", align_corners = false])
local Upsample = class("nn.Upsample", Module)
function Upsample:__init(options)
  Module.__init(self)
  options = options or {}
  self.scale, self.size = options.scale, options.size
  self.mode = options.mode or "bilinear"
  self.align_corners = options.align_corners or false
  if not self.scale and not self.size then error("nn.Upsample: give scale or size", 2) end
  if self.mode ~= "bilinear" and self.mode ~= "nearest" then
    error("nn.Upsample: mode must be 'bilinear' or 'nearest', got " .. tostring(self.mode), 2)
  end
end
function Upsample:forward(x)
  local h, w
  if self.size then h, w = self.size[1], self.size[2]
  else h, w = math.floor(x.shape[3] * self.scale), math.floor(x.shape[4] * self.scale) end
  if self.mode == "nearest" then return kd.resize_nearest(x, h, w) end
  return kd.resize_bilinear(x, h, w, self.align_corners)
end
function Upsample:extra_repr()
  return (self.size and ("size " .. self.size[1] .. "x" .. self.size[2]) or ("scale " .. self.scale)) .. ", " .. self.mode
end

return {
  ReLU = ReLU, ReLU6 = ReLU6, LeakyReLU = LeakyReLU, Identity = Identity, Dropout2d = Dropout2d,
  MaxPool2d = pool_class("nn.MaxPool2d", kd.max_pool2d),
  AvgPool2d = pool_class("nn.AvgPool2d", kd.avg_pool2d),
  Upsample = Upsample,
}
