-- Wrong arguments to every public kd function group raise a Lua error, never
-- a crash: each function is called with missing, mistyped and mis-shaped
-- arguments; a few messages are checked word for word.
local h = require("harness")
local T = {}

-- functions that are fine with no arguments
local no_args_ok = {get_threads = true, memory = true, rss = true, rss_peak = true, clock = true, empty_cache = true,
                    grad_enabled = true, help = true, is_tensor = true, conv_precision = true, conv_algorithm = true, engine = true}

local function bad_calls()
  local img = kd.randn({2, 3, 4, 4})
  return {
    {}, {nil, nil}, {"text"}, {{}}, {1, 2, 3}, {img, "x"}, {img, {}}, {img, img, {bogus = 1}},
    {kd.zeros({2}, "int32")}, {img, kd.randn({5})}, {function() end}, {img, -1, -1},
  }
end

local function call_everything(group, prefix)
  local names = {}
  for name, fn in pairs(group) do if type(fn) == "function" then names[#names + 1] = name end end
  table.sort(names)
  local count = 0
  for _, name in ipairs(names) do
    if not no_args_ok[name] and name ~= "no_grad" and name ~= "class" then
      local ok = pcall(group[name])
      h.eq(ok, false, prefix .. name .. "() with no arguments raises")
      for _, args in ipairs(bad_calls()) do
        pcall(group[name], unpack(args, 1, 4)) -- must not crash; some bad tuples may be valid
        count = count + 1
      end
    end
  end
  return count
end

function T.every_function_survives_bad_arguments()
  local n = call_everything(kd, "kd.") + call_everything(kd.losses, "kd.losses.")
  h.truthy(n > 400, "called " .. n .. " combinations")
end

function T.tensor_methods_survive_bad_arguments()
  local methods = kd._C.Tensor_methods
  local x = kd.randn({2, 3, 4, 4})
  for name, fn in pairs(methods) do
    for _, args in ipairs(bad_calls()) do pcall(fn, x, unpack(args, 1, 4)) end
    pcall(fn, "not a tensor")
    pcall(fn)
  end
  h.raises(function() methods.view("x", 2) end, "tensor expected, got string")
end

function T.modules_and_optimizers_survive_bad_arguments()
  for name, cls in pairs(kd.nn) do
    for _, args in ipairs(bad_calls()) do
      local ok, m = pcall(cls, unpack(args, 1, 4))
      if ok and type(m) == "table" and m.forward then
        for _, input in ipairs(bad_calls()) do pcall(m.forward, m, unpack(input, 1, 2)) end
      end
    end
  end
  for _, name in ipairs({"SGD", "AdamW"}) do
    for _, args in ipairs(bad_calls()) do pcall(kd.optim[name], unpack(args, 1, 4)) end
  end
  h.raises(function() kd.optim.SGD("params", {lr = 1}) end, "params must be a non-empty list")
end

function T.messages_name_the_function_and_problem()
  local x = kd.randn({8, 16, 4, 8})
  h.raises(function() kd.conv2d(x, kd.randn({64, 32, 3, 3})) end,
           "kd.conv2d: conv2d: weight 64x32x3x3 does not match input 8x16x4x8")
  h.raises(function() kd.conv2d(x, "w") end, "bad argument #2", "tensor expected, got string")
  h.raises(function() kd.conv2d(x, kd.randn({4, 16, 3, 3}), nil, {stride = "2"}) end,
           "option 'stride' must be a number or a pair")
  h.raises(function() kd.conv2d(x, kd.randn({4, 16, 3, 3}), nil, {stirde = 2}) end,
           "kd.conv2d: unknown option 'stirde'")
  h.raises(function() kd.losses.cross_entropy(x, kd.zeros({8, 4, 8})) end, "target must be int32")
  h.raises(function() kd.losses.cross_entropy(x, kd.zeros({8, 4, 8}, "int32"), {reduction = "avg"}) end,
           "reduction must be 'mean', 'sum' or 'none'")
  h.raises(function() kd.losses.kl_div(x, x, {temperature = 0}) end, "temperature 0 must be > 0")
  h.raises(function() kd.max_pool2d(x, {}) end, "option 'kernel' is required")
  h.raises(function() kd.zeros({2, -1}) end, "shape sizes must be non-negative integers")
  h.raises(function() kd.zeros({1e12}) end, "below 2^31") -- not wrapped around to a negative int
  h.raises(function() kd.zeros(3, 1e10) end, "below 2^31")
  h.raises(function() x:narrow(1, 1e11, 1) end, "100000000000 does not fit a 32-bit integer")
  h.raises(function() kd.max_pool2d(x, {kernel = 1e12}) end, "option 'kernel' does not fit a 32-bit integer")
  h.raises(function() kd._C.colorize(kd.zeros({1, 2, 2}, "int32"), {{1, 2, 300}}) end, "colour 1: channels must be numbers 0..255")
  h.raises(function() kd.tensor({{1, 2}, {3}}) end, "ragged nested table")
  h.raises(function() kd.tensor({1, "a"}) end, "element 2 is string")
  h.raises(function() kd.zeros({1}, "float16") end, "invalid option 'float16'")
  h.raises(function() kd.set_threads(0) end, "must be 1 to 1024")
  h.raises(function() kd.sum(x, 7) end, "dim 7 out of range")
  h.raises(function() kd.concat({x, 3}) end, "element 2 is number")
  h.raises(function() x:item() end, "has 4096 elements, not one")
end

-- In-place changes to what the tape saved: an error at backward, as in
-- PyTorch, through a view, through an optimizer step between forward and
-- backward; the usual order (backward, then step) is untouched.
function T.in_place_changes_after_the_forward()
  local x = kd.tensor({1, 2, 3}):requires_grad_()
  local y = x * x
  x:fill_(3)
  h.raises(function() y:sum():backward() end, "mul saved for its gradient was changed in place")
  local a = kd.tensor({{{{1, 2}, {3, 4}}}}):requires_grad_()
  local b = (a * a):sum()
  a:narrow(1, 1):copy_(kd.zeros({1, 1, 2, 2}))
  h.raises(function() b:backward() end, "changed in place")
  kd.manual_seed(1)
  local conv = kd.nn.Conv2d(1, 2, 3, {padding = 1})
  local opt = kd.optim.SGD(conv:parameters(), {lr = 0.1})
  local loss = conv(kd.randn({1, 1, 4, 4})):sum()
  loss:backward()
  opt:step() -- after backward: fine
  loss = conv(kd.randn({1, 1, 4, 4})):sum()
  opt:step() -- before backward: the weights the convolution saved moved
  h.raises(function() loss:backward() end, "conv2d")
end

return T
