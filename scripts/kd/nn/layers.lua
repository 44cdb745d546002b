-- Layers with parameters: Conv2d and BatchNorm2d.
local kd = require("kd")
local class = require("kd.infra.class")
local Module = require("kd.nn.module")

local function check_positive_int(fn, what, v)
  if type(v) ~= "number" or v < 1 or v % 1 ~= 0 then
    error(string.format("%s: %s must be a positive integer, got %s", fn, what, tostring(v)), 3)
  end
end

local function pair(v) if type(v) == "table" then return v end return {v, v} end

local function check_options(fn, options, known)
  for key in pairs(options or {}) do
    if not known[key] then error(string.format("%s: unknown option '%s'", fn, tostring(key)), 3) end
  end
end

-- Conv2d(in_channels, out_channels, kernel[, {stride, padding, dilation, groups, bias = true}])
-- kernel, stride, padding, dilation: a number or {h, w}. Weights are He-initialised
-- (normal, std sqrt(2 / fan_in)); the bias starts at 0.
local Conv2d = class("nn.Conv2d", Module)

function Conv2d:__init(cin, cout, kernel, options)
  Module.__init(self)
  options = options or {}
  check_options("nn.Conv2d", options, {stride = true, padding = true, dilation = true, groups = true, bias = true})
  check_positive_int("nn.Conv2d", "in_channels", cin)
  check_positive_int("nn.Conv2d", "out_channels", cout)
  local k = pair(kernel)
  check_positive_int("nn.Conv2d", "kernel", k[1])
  check_positive_int("nn.Conv2d", "kernel", k[2])
  local groups = options.groups or 1
  check_positive_int("nn.Conv2d", "groups", groups)
  if cin % groups ~= 0 or cout % groups ~= 0 then
    error(string.format("nn.Conv2d: groups %d must divide in_channels %d and out_channels %d", groups, cin, cout), 2)
  end
  self.in_channels, self.out_channels, self.kernel = cin, cout, k
  self.options = {stride = options.stride or 1, padding = options.padding or 0,
                  dilation = options.dilation or 1, groups = groups}
  self:register_parameter("weight", kd.zeros({cout, cin / groups, k[1], k[2]}):kaiming_normal_())
  if options.bias ~= false then self:register_parameter("bias", kd.zeros({cout})) end
end

function Conv2d:forward(x)
  return kd.conv2d(x, self.weight, self.bias, self.options)
end

-- Inference folds a batch norm into the convolution before it
-- (kd.conv2d_bn: the batch norm's pass gone, a residual sum and a ReLU in the
-- convolution's epilogue) where the batch norm is in evaluation mode and no
-- gradient is wanted; set_folding(false) runs the ops one by one.
local folding = true
local function set_folding(on)
  local was = folding
  folding = on and true or false
  return was
end

local function wants_gradient(...)
  if not kd.grad_enabled() then return false end
  for i = 1, select("#", ...) do
    local t = select(i, ...)
    if t and t.requires_grad then return true end
  end
  return false
end

-- bn(self(x)) [+ options.residual] [then a ReLU when options.relu]: what
-- the zoo's blocks run. Folded where it can be (above); else the ops one by
-- one, a batch norm and its ReLU in one pass (BatchNorm2d:forward_relu).
function Conv2d:forward_bn(x, bn, options)
  options = options or {}
  local residual, relu = options.residual, options.relu
  if folding and not bn.training and bn.running_mean and
     not wants_gradient(x, self.weight, self.bias, bn.weight, bn.bias, residual) then
    local o = self.options
    return kd.conv2d_bn(x, self.weight, self.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, residual,
                        {stride = o.stride, padding = o.padding, dilation = o.dilation, groups = o.groups,
                         eps = bn.eps, relu = relu})
  end
  local y = self(x)
  if residual then
    y = bn(y) + residual
    if relu then return kd.relu(y) end
    return y
  end
  if relu then return bn:forward_relu(y) end
  return bn(y)
end

function Conv2d:extra_repr()
  local o = self.options
  local function show(v) return type(v) == "table" and (v[1] .. "x" .. v[2]) or tostring(v) end
  local s = string.format("%d -> %d, %s", self.in_channels, self.out_channels, show(self.kernel))
  if show(o.stride) ~= "1" then s = s .. ", stride " .. show(o.stride) end
  if show(o.padding) ~= "0" then s = s .. ", padding " .. show(o.padding) end
  if show(o.dilation) ~= "1" then s = s .. ", dilation " .. show(o.dilation) end
  if o.groups ~= 1 then s = s .. ", groups " .. o.groups end
  if not self.bias then s = s .. ", no bias" end
  return s
end

-- BatchNorm2d(channels[, {eps = 1e-5, momentum = 0.1, affine = true, track_running_stats = true}])
-- A data-parallel run with sync_bn sets .sync (kd.dist.sync_batch_norm): in
-- training its statistics are then over every process's batch.
local BatchNorm2d = class("nn.BatchNorm2d", Module)

function BatchNorm2d:__init(channels, options)
  Module.__init(self)
  options = options or {}
  check_options("nn.BatchNorm2d", options, {eps = true, momentum = true, affine = true, track_running_stats = true})
  check_positive_int("nn.BatchNorm2d", "channels", channels)
  self.channels, self.eps, self.momentum = channels, options.eps or 1e-5, options.momentum or 0.1
  if options.affine ~= false then
    self:register_parameter("weight", kd.ones({channels}))
    self:register_parameter("bias", kd.zeros({channels}))
  end
  if options.track_running_stats ~= false then
    self:register_buffer("running_mean", kd.zeros({channels}))
    self:register_buffer("running_var", kd.ones({channels}))
    -- PyTorch's counter of training batches, kept so state dicts match its
    -- names; a 1-element int64 here, a 0-dimensional one there
    self:register_buffer("num_batches_tracked", kd.zeros({1}, "int64"))
  end
end

function BatchNorm2d:forward(x, relu)
  -- without running statistics, evaluation also normalises with the batch's
  local training = self.training or self.running_mean == nil
  if self.training and self.num_batches_tracked then
    self.num_batches_tracked:set(1, self.num_batches_tracked:get(1) + 1)
  end
  local sync = self.sync and training
  local y = kd.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                          {training = training, momentum = self.momentum, eps = self.eps, sync = self.sync,
                           relu = relu and not sync})
  if relu and sync then return kd.relu(y) end
  return y
end

-- kd.relu(bn(x)) in one pass (the same values and gradients): what
-- nn.Sequential runs for a BatchNorm2d followed by a ReLU, and the zoo's blocks.
function BatchNorm2d:forward_relu(x) return self:forward(x, true) end

function BatchNorm2d:extra_repr()
  return string.format("%d, eps %g, momentum %g", self.channels, self.eps, self.momentum)
end

return {Conv2d = Conv2d, BatchNorm2d = BatchNorm2d, set_folding = set_folding}
