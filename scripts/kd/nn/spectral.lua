-- SNConv2d: a convolution whose weight is divided by its largest singular
-- value (spectral normalisation, Miyato et al. 2018), so the layer is at
-- most 1-Lipschitz: what keeps a Wasserstein critic (kd.method.holistic)
-- in bounds without a gradient penalty (which would need gradients of
-- gradients). The weight is seen as a matrix of out rows by in x kh x kw
-- columns; sigma = u^T W v, with u and v from one power-iteration step per
-- forward in training (as PyTorch's spectral_norm) and constants of the
-- step, so the gradient flows through W in both W and sigma.
--   SNConv2d(in, out, kernel[, {stride, padding, dilation, bias = true, power_iterations = 1}])
--   conv(x)                    -- the normalised convolution
--   conv(x, {detach = true})   -- the same with its weights detached (a
--                                 student's adversarial term: no gradient to
--                                 the critic) and u left as it is
local kd = require("kd")
local C = require("kd._C")
local class = require("kd.infra.class")
local Module = require("kd.nn.module")
local Conv2d = require("kd.nn.layers").Conv2d

local SNConv2d = class("nn.SNConv2d", Module)

function SNConv2d:__init(cin, cout, kernel, options)
  Module.__init(self)
  options = options or {}
  local conv_options = {}
  for key, value in pairs(options) do
    if key ~= "power_iterations" then conv_options[key] = value end
  end
  if conv_options.groups then error("nn.SNConv2d: groups are not supported", 2) end
  local conv = Conv2d(cin, cout, kernel, conv_options) -- checks the arguments, initialises the weights
  self.in_channels, self.out_channels, self.kernel, self.options = cin, cout, conv.kernel, conv.options
  self.power_iterations = options.power_iterations or 1
  if type(self.power_iterations) ~= "number" or self.power_iterations < 1 or self.power_iterations % 1 ~= 0 then
    error("nn.SNConv2d: power_iterations must be a positive integer", 2)
  end
  self:register_parameter("weight", conv.weight)
  if conv.bias then self:register_parameter("bias", conv.bias) end
  local u = kd.randn({cout})
  self:register_buffer("weight_u", u / math.sqrt(u:sum_squares()))
end

-- The weight divided by its spectral norm (and the norm, a number).
function SNConv2d:normalized_weight(detach)
  local iterations = (self.training and not detach) and self.power_iterations or 0
  local outer, sigma = C.spectral_power(self.weight, self.weight_u, iterations)
  local w = detach and self.weight:detach() or self.weight
  local s = (w * outer):sum() -- u^T W v, differentiable in W
  local n = w:numel()
  return (w:view(n, 1) / s):view(unpack(w.shape)), sigma
end

function SNConv2d:forward(x, options)
  local detach = options and options.detach
  local bias = self.bias and (detach and self.bias:detach() or self.bias) or nil
  return kd.conv2d(x, (self:normalized_weight(detach)), bias, self.options)
end

-- Conv2d's description (its fields are the same), marked
function SNConv2d:extra_repr() return Conv2d.extra_repr(self) .. ", spectral norm" end

return {SNConv2d = SNConv2d}
