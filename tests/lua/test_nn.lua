-- kd.nn: parameters and dotted names, state dicts (strict loading), train and
-- eval, printing as a tree, user modules by subclassing, container errors.
local h = require("harness")
local nn = kd.nn
local T = {}

local function small_net()
  return nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1, bias = false}), nn.BatchNorm2d(4), nn.ReLU(),
                       nn.MaxPool2d(2), nn.Conv2d(4, 2, 1), nn.Upsample({scale = 2}))
end

function T.parameters_and_names()
  local net = small_net()
  local names = {}
  for _, pair in ipairs(net:named_parameters()) do names[#names + 1] = pair[1] end
  h.eq(table.concat(names, ","), "0.weight,1.weight,1.bias,4.weight,4.bias", "dotted names: Sequential children count from 0, as in PyTorch")
  h.eq(net:num_parameters(), 4 * 3 * 9 + 4 + 4 + 2 * 4 + 2, "parameter count")
  h.eq(#net:children(), 6, "children")
  for _, p in ipairs(net:parameters()) do h.truthy(p.requires_grad, "parameters require grad") end
  local y = net:forward(kd.randn({2, 3, 8, 8}))
  h.eq(table.concat(y.shape, "x"), "2x2x8x8", "forward shape")
end

function T.state_dict_round_trip()
  local a, b = small_net(), small_net()
  a:forward(kd.randn({2, 3, 8, 8})) -- moves running statistics
  b:load_state_dict(a:state_dict())
  local sa, sb = a:state_dict(), b:state_dict()
  for name, t in pairs(sa) do h.eq((t:to("float32") - sb[name]:to("float32")):sum_squares(), 0, name) end
  h.truthy(sa["1.running_mean"] ~= nil, "buffers are in the state dict")
  h.eq(sa["1.num_batches_tracked"]:get(1), 1, "a training forward counts one batch, as PyTorch does")
  local partial = {["0.weight"] = sa["0.weight"], ["extra.weight"] = kd.zeros({1})}
  h.raises(function() b:load_state_dict(partial) end, "6 missing keys [1.bias, 1.running_mean",
           "1 unexpected keys [extra.weight]")
  local missing, unexpected = b:load_state_dict(partial, {strict = false})
  h.eq(#missing, 6, "missing reported when not strict")
  h.eq(unexpected[1], "extra.weight", "unexpected reported when not strict")
  h.raises(function() b:load_state_dict({["0.weight"] = kd.zeros({1})}, {strict = false}) end,
           "'0.weight' has shape 1 in the state, 4x3x3x3 in the module")
end

-- Files written before Sequential counted from 0, and without
-- num_batches_tracked, still load, strictly, into the same values.
function T.state_dict_of_earlier_files()
  local a, b = small_net(), small_net()
  a:forward(kd.randn({2, 3, 8, 8}))
  local old = {}
  for name, t in pairs(a:state_dict()) do
    if not name:find("num_batches_tracked") then
      old[(name:gsub("^(%d+)", function(i) return tostring(tonumber(i) + 1) end))] = t
    end
  end
  h.truthy(old["2.running_mean"] ~= nil and old["1.running_mean"] == nil, "the old names")
  b:load_state_dict(old)
  h.eq((a:get(2).running_mean - b:get(2).running_mean):sum_squares(), 0, "values land under the new names")
  h.eq((a:get(1).weight - b:get(1).weight):sum_squares(), 0, "first child too")
  old["9.weight"] = kd.zeros({1})
  h.raises(function() b:load_state_dict(old) end, "1 unexpected keys [8.weight] (the state's names read as an older kdseg's, whose Sequential counted from 1)")
end

function T.train_eval()
  local net = small_net()
  net:eval()
  h.eq(net:get(2).training, false, "eval reaches children")
  local x = kd.randn({2, 3, 8, 8})
  local before = net:get(2).running_mean:sum_squares()
  net:forward(x)
  h.eq(net:get(2).running_mean:sum_squares(), before, "eval does not move running statistics")
  net:train()
  net:forward(x)
  h.truthy(net:get(2).running_mean:sum_squares() ~= before, "training moves them")
  local drop = nn.Dropout2d(0.5)
  drop:eval()
  h.eq((drop:forward(x) - x):sum_squares(), 0, "dropout is identity in eval")
end

function T.printing_tree()
  local s = tostring(small_net())
  h.truthy(s:find("(0): nn.Conv2d(3 -> 4, 3x3, padding 1, no bias)", 1, true), s)
  h.truthy(s:find("(1): nn.BatchNorm2d(4", 1, true), s)
end

function T.subclass_in_a_script()
  local Residual = kd.class("Residual", nn.Module)
  function Residual:__init(c)
    nn.Module.__init(self)
    self:add_module("conv", nn.Conv2d(c, c, 3, {padding = 1}))
    self:add_module("bn", nn.BatchNorm2d(c))
  end
  function Residual:forward(x) return kd.relu(self.bn(self.conv(x)) + x) end
  local net = nn.Sequential(Residual(4), Residual(4))
  h.eq(net:named_parameters()[1][1], "0.conv.weight", "nested names")
  local y = net(kd.randn({1, 4, 5, 5}))
  h.eq(table.concat(y.shape, "x"), "1x4x5x5", "user module forward")
end

-- nn.Sequential runs a BatchNorm2d followed by a ReLU as one op
-- (BatchNorm2d:forward_relu): the same output and gradients, bit for bit,
-- as the two modules one after the other, and one tensor fewer made.
function T.sequential_fuses_batch_norm_and_relu()
  for _, training in ipairs({true, false}) do
    local function run(fused)
      kd.manual_seed(4)
      local conv, bn, relu = kd.nn.Conv2d(3, 8, 3, {padding = 1}), kd.nn.BatchNorm2d(8), kd.nn.ReLU()
      local seq = kd.nn.Sequential({conv, bn, relu})
      seq:train(training)
      local x = kd.randn({2, 3, 6, 7})
      local y = fused and seq(x) or relu(bn(conv(x)))
      ;(y * y):sum():backward()
      return y, conv.weight.grad, bn.weight.grad, bn.bias.grad, bn.running_mean
    end
    local a, b = {run(true)}, {run(false)}
    for i = 1, #a do
      h.eq(table.concat(a[i]:flat(), ","), table.concat(b[i]:flat(), ","),
           string.format("training %s: result %d equal", tostring(training), i))
    end
  end
  -- one tensor fewer: made and kept alive in a no-grad forward
  local bn, relu = kd.nn.BatchNorm2d(4), kd.nn.ReLU()
  local x = kd.randn({2, 4, 5, 5})
  collectgarbage()
  local before = kd._C.memory().live_tensors
  local fused = kd.no_grad(function() return kd.nn.Sequential({bn, relu})(x) end)
  local after_fused = kd._C.memory().live_tensors
  local unfused_mid = kd.no_grad(function() return bn(x) end)
  local unfused = kd.no_grad(function() return relu(unfused_mid) end)
  h.eq(after_fused - before, 1, "fused: only the output")
  h.eq(kd._C.memory().live_tensors - after_fused, 2, "apart: the batch norm's output and the ReLU's")
  h.truthy(fused and unfused, "kept alive")
  h.raises(function() kd.batch_norm(x, nil, nil, nil, nil, {sync = true, relu = true}) end, "not fused into a synchronised")
end

function T.errors_name_the_module()
  local net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(5, 2, 1))
  h.raises(function() net:forward(kd.randn({1, 3, 8, 8})) end, "In 2 module of nn.Sequential (nn.Conv2d)",
           "conv2d: weight 2x5x1x1 does not match input 1x4x6x6")
  h.raises(function() nn.Conv2d(3, 4, 3, {strid = 2}) end, "unknown option 'strid'")
  h.raises(function() nn.Conv2d(3, 4, 3, {groups = 2}) end, "groups 2 must divide")
  h.raises(function() nn.Dropout2d(1.5) end, "p must be a number in [0, 1)")
  h.raises(function() nn.Module():forward() end, "forward is not defined")
  h.raises(function() nn.Module():add_module("x", {}) end, "not an nn.Module")
end

return T
