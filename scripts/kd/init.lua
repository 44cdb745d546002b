-- kd: the Lua API of kdseg, pre-loaded as the global `kd` in the kdseg host.
-- The raw C bindings are kd._C; this file gathers them with the Lua parts
-- (tensor operators and printing, nn, optim, losses, checkpoints) into one table.
local C = require("kd._C")

local kd = {_C = C, version = C.version}

-- tensors
for _, name in ipairs({"zeros", "full", "randn", "rand", "arange", "tensor", "from_bytes", "is_tensor"}) do
  kd[name] = C[name]
end
function kd.ones(shape, dtype) return C.full(shape, 1, dtype) end
function kd.zeros_like(t) return C.zeros(t.shape, t.dtype) end
function kd.ones_like(t) return C.full(t.shape, 1, t.dtype) end

-- ops: every core op, under its own name
for _, name in ipairs({"add", "sub", "mul", "div", "affine", "rdiv", "channel_add", "channel_sub",
                       "channel_mul", "channel_div", "exp", "log", "relu", "relu6", "leaky_relu", "sigmoid",
                       "tanh", "dropout2d", "sum", "mean", "concat", "slice_channels", "conv2d",
                       "conv2d_reference", "conv2d_bn", "batch_norm", "max_pool2d", "avg_pool2d",
                       "adaptive_avg_pool2d", "resize_bilinear", "resize_nearest", "softmax",
                       "log_softmax", "crop2d", "add_window"}) do
  kd[name] = C[name]
end
function kd.global_avg_pool(x) return C.adaptive_avg_pool2d(x, 1, 1) end
-- max over channels: values and class indices (0-based class ids, int32)
kd.max = C.max_channels
function kd.argmax(x) local _, i = C.max_channels(x); return i end

kd.losses = {
  cross_entropy = C.cross_entropy,
  kl_div = C.kl_div,
  mse = C.mse,
  pairwise_distill = C.pairwise_distill,
  pairwise_similarity = C.pairwise_similarity,
}

-- process settings
kd.set_threads, kd.get_threads = C.set_threads, C.get_threads
kd.set_conv_backend = C.set_conv_backend -- "onednn" (the default where it runs) or "im2col"
-- "bf16": oneDNN's convolutions read inputs, weights and output gradients as
-- bfloat16 (results and sums float32); "float32", the default
kd.set_conv_precision, kd.conv_precision = C.set_conv_precision, C.conv_precision
-- "winograd": oneDNN's 3x3 stride-1 undilated convolutions by Winograd
-- F(4x4, 3x3) where it has the kernels (AVX-512, float32), about 2x faster,
-- results within about 1e-5 of direct: the default; "direct" for every
-- convolution (KDSEG_CONV_ALGORITHM=direct in the environment)
kd.set_conv_algorithm, kd.conv_algorithm = C.set_conv_algorithm, C.conv_algorithm
-- How this process computes now, as each run's results.json records it:
-- the thread count fixes the bits, and the convolutions' precision and
-- algorithm how they round.
function kd.engine()
  return {threads = C.get_threads(), conv_precision = C.conv_precision(), conv_algorithm = C.conv_algorithm()}
end
-- "blocked" (the default): a convolution whose output needs no gradient
-- leaves it in its kernels' layout for the next convolution, batch norm or
-- elementwise op, and any other reader sees NCHW; "nchw": always NCHW
-- (KDSEG_LAYOUT=nchw in the environment). The results are the same.
kd.set_layout = C.set_layout
kd.manual_seed = C.manual_seed
kd.memory, kd.rss, kd.rss_peak, kd.clock = C.memory, C.rss, C.rss_peak, C.clock
kd.empty_cache = C.empty_cache
kd.mkdir = C.mkdir

-- Runs fn with grad mode off (nothing is recorded), restoring the mode even
-- if fn raises; returns fn's results.
function kd.no_grad(fn, ...)
  local previous = C.set_grad_enabled(false)
  local results = {pcall(fn, ...)}
  C.set_grad_enabled(previous)
  if not results[1] then error(results[2], 0) end
  return unpack(results, 2, table.maxn(results))
end
kd.grad_enabled = C.grad_enabled

package.loaded.kd = kd -- the modules below may require("kd")
require("kd.tensor")(kd)
kd.class = require("kd.infra.class")
kd.nn = require("kd.nn")
kd.optim = require("kd.optim")
local safetensors = require("kd.infra.safetensors")
kd.save, kd.load = safetensors.save, safetensors.load
kd.help = require("kd.infra.help")
kd.yaml = require("kd.infra.yaml")
kd.data = require("kd.data")
kd.models = require("kd.models")
kd.config = require("kd.infra.config")
kd.train = require("kd.train")
kd.pseudo = require("kd.method.pseudo")
kd.distill = require("kd.method.distill")
kd.holistic = require("kd.method.holistic")
kd.students = require("kd.method.students")
kd.terms = require("kd.train.terms")
kd.baselines = require("kd.baselines")
kd.dist = require("kd.dist")
-- kd.image.read(path): PNG or JPEG; kd.image.write(path, t[, palette]): PNG,
-- or JPEG (quality 95) when the path ends in .jpg or .jpeg
kd.image = {read = C.image_read}
function kd.image.write(path, t, palette)
  if type(path) == "string" and (path:lower():match("%.jpe?g$")) then return C.jpeg_write(path, t, 95) end
  return C.png_write(path, t, palette)
end
kd.gradcheck = require("kd.gradcheck")
return kd
