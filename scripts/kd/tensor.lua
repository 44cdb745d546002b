-- tensor: operators, printing and method forms of the ops for kd.Tensor.
-- `a + b` is elementwise for equal shapes and per-channel when b is a vector
-- of a's channels; numbers work on either side.
return function(kd)
  local C = kd._C
  local meta, methods = C.Tensor_meta, C.Tensor_methods

  local function same_shape(a, b)
    local sa, sb = a.shape, b.shape
    if #sa ~= #sb then return false end
    for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
    return true
  end

  local function shape_string(t) return table.concat(t.shape, "x") end

  -- op for equal shapes, channel_op for (N x C x ..., C), scalar(t, number) and
  -- rscalar(number, t) for numbers.
  local function operator(symbol, op, channel_op, scalar, rscalar)
    return function(a, b)
      local ta, tb = C.is_tensor(a), C.is_tensor(b)
      if ta and tb then
        if same_shape(a, b) then return op(a, b) end
        if b.ndim == 1 and a.ndim >= 2 and a.shape[2] == b.shape[1] then return channel_op(a, b) end
        error(string.format("tensor %s tensor: shapes %s and %s neither match nor broadcast " ..
                            "per channel", symbol, shape_string(a), shape_string(b)), 2)
      elseif ta and type(b) == "number" then return scalar(a, b)
      elseif tb and type(a) == "number" then return rscalar(a, b)
      end
      error(string.format("cannot apply %s to %s and %s", symbol, type(a), type(b)), 2)
    end
  end

  meta.__add = operator("+", C.add, C.channel_add,
    function(t, s) return C.affine(t, 1, s) end, function(s, t) return C.affine(t, 1, s) end)
  meta.__sub = operator("-", C.sub, C.channel_sub,
    function(t, s) return C.affine(t, 1, -s) end, function(s, t) return C.affine(t, -1, s) end)
  meta.__mul = operator("*", C.mul, C.channel_mul,
    function(t, s) return C.affine(t, s, 0) end, function(s, t) return C.affine(t, s, 0) end)
  meta.__div = operator("/", C.div, C.channel_div,
    function(t, s)
      if s == 0 then error("tensor / 0", 2) end
      return C.affine(t, 1 / s, 0)
    end,
    function(s, t) return C.rdiv(t, s) end)
  meta.__unm = function(t) return C.affine(t, -1, 0) end
  meta.__tostring = function(t) return require("kd.infra.pretty").tensor(t) end
  meta.__len = function(t) return t.shape[1] end

  -- method forms: x:relu(), x:sum(), x:softmax(2) ...
  for _, name in ipairs({"exp", "log", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "sum", "mean",
                         "softmax", "log_softmax", "dropout2d", "resize_bilinear", "resize_nearest",
                         "slice_channels", "adaptive_avg_pool2d"}) do
    methods[name] = C[name]
  end
  methods.argmax = function(t) local _, i = C.max_channels(t); return i end
  methods.max = C.max_channels
  methods.zero_ = function(t) return t:fill_(0) end
  methods.requires_grad_ = function(t, flag)
    t.requires_grad = flag ~= false
    return t
  end
  methods.contiguous = function(t) return t end -- every kd tensor is contiguous
  methods.float = function(t) return t:to("float32") end
  methods.int = function(t) return t:to("int32") end
end
