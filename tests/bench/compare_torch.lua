-- compare_torch: kdseg against PyTorch on the two benchmark networks of
-- ../shared/bench/NETS.md, in one sitting (a benchmark, not a test; part of
-- make bench). For each thread count and network, kdseg's run
-- (tests/bench/bench_nets.lua) and PyTorch's (tests/bench/torch_ref.py, a copy
-- of the shared reference, with glibc told to keep freed memory as NETS.md
-- says) alternate ROUNDS times, so drift of this shared machine hits both
-- alike; each figure is the median over rounds, printed as the ratio
-- kdseg / PyTorch (below 1: kdseg is faster): step_ratio, inference_ratio
-- and peak_rss_ratio for kdseg with direct convolutions only
-- (KDSEG_CONV_ALGORITHM=direct), winograd_* for its default. Also the measured FMA peak
-- (build/bench/bench_peak) and each step as a fraction of it. Where oneDNN
-- has bfloat16 convolutions, kdseg also runs with them
-- (KDSEG_CONV_PRECISION=bf16) in the same rounds, and PyTorch with its
-- bfloat16 autocast (torch_ref.py --bf16): bf16_step_ratio and
-- bf16_inference_ratio are kdseg's bfloat16 against PyTorch's float32,
-- bf16_step_ratio_vs_torch_bf16 and bf16_inference_ratio_vs_torch_bf16
-- against PyTorch's bfloat16. Where Winograd kernels run, kdseg also
-- runs in float32 with them (its default, KDSEG_CONV_ALGORITHM=winograd) in
-- the same rounds: winograd_step_ratio, winograd_inference_ratio and
-- winograd_peak_rss_ratio (winograd_kernels: oneDNN's, or kdseg's own where
-- oneDNN has none, as on AVX2), against
-- PyTorch's float32 (which runs direct). kdseg's inference is with its blocked layout
-- (the default); inference_unfused_ratio with NCHW throughout (kd.set_layout).
-- Without python3-torch at /usr/bin/python3 the comparison is skipped, saying so.
-- The second argument picks kdseg's settings (all three by default): a
-- shorter sitting for one of them.
--   kdseg tests/bench/compare_torch.lua [rounds] [direct,winograd,bf16]
local cjson = require("cjson")

local rounds = tonumber(arg[1]) or 2
local settings = {}
for name in (arg[2] or "direct,winograd,bf16"):gmatch("[^,]+") do
  if name ~= "direct" and name ~= "winograd" and name ~= "bf16" then
    error("compare_torch: unknown setting '" .. name .. "' (direct, winograd or bf16, separated by commas)", 0)
  end
  settings[name] = true
end
local python = "/usr/bin/python3"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local kdseg = here .. "/../../build/kdseg"
local median = dofile(here .. "/median.lua")

local function lines_of(command)
  local p = io.popen(command .. " 2>&1")
  local out = {}
  for line in p:lines() do
    if line:sub(1, 1) == "{" then
      local ok, v = pcall(cjson.decode, line)
      if ok then out[#out + 1] = v end
    end
  end
  p:close()
  return out
end

local peak = {}
for _, v in ipairs(lines_of(here .. "/../../build/bench/bench_peak")) do
  peak[v.threads] = math.max(peak[v.threads] or 0, v.gflops)
  print(cjson.encode(v))
end

local has_torch = os.execute(python .. " -c 'import torch' > /dev/null 2>&1")
has_torch = has_torch == 0 or has_torch == true
if not has_torch then
  print("compare_torch: PyTorch comparison skipped: " .. python .. " has no torch (apt-get install python3-torch)")
end

local malloc = "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296 "
for _, threads in ipairs({2, 1}) do
  for _, net in ipairs({"student", "teacher"}) do
    local k = {step = {}, infer = {}, infer_unfused = {}, rss = {}, gflop = nil}
    local b = {step = {}, infer = {}}
    local wg = {step = {}, infer = {}, rss = {}}
    local tb = {step = {}, infer = {}}
    local t = {step = {}, infer = {}, rss = {}}
    for _ = 1, rounds do
      for _, v in ipairs(settings.direct and lines_of(string.format("KDSEG_CONV_ALGORITHM=direct %s %s/bench_nets.lua %d bench_%s",
                                                                    kdseg, here, threads, net)) or {}) do
        k.step[#k.step + 1], k.infer[#k.infer + 1], k.rss[#k.rss + 1] = v.train_step_ms, v.inference_ms, v.peak_rss_mib
        k.infer_unfused[#k.infer_unfused + 1] = v.inference_unfused_ms
        k.gflop = v.train_step_gflop
      end
      for _, v in ipairs(settings.bf16 and lines_of(string.format("KDSEG_CONV_PRECISION=bf16 %s %s/bench_nets.lua %d bench_%s",
                                                                  kdseg, here, threads, net)) or {}) do
        if v.conv_precision == "bf16" then b.step[#b.step + 1], b.infer[#b.infer + 1] = v.train_step_ms, v.inference_ms end
      end
      for _, v in ipairs(settings.winograd and lines_of(string.format("KDSEG_CONV_ALGORITHM=winograd %s %s/bench_nets.lua %d bench_%s",
                                                                      kdseg, here, threads, net)) or {}) do
        if v.conv_algorithm == "winograd" then
          wg.step[#wg.step + 1], wg.infer[#wg.infer + 1], wg.rss[#wg.rss + 1] = v.train_step_ms, v.inference_ms, v.peak_rss_mib
          wg.kernels = v.winograd_kernels
        end
      end
      if has_torch then
        for _, mode in ipairs({"train", "infer"}) do
          local command = string.format("%s%s %s/torch_ref.py --net %s --threads %d --mode %s", malloc, python, here, net,
                                        threads, mode)
          for _, v in ipairs(lines_of(command)) do
            if v.what == "train_step" then t.step[#t.step + 1], t.rss[#t.rss + 1] = v.median_ms, v.peak_rss_mib end
            if v.what == "infer" then t.infer[#t.infer + 1] = v.median_ms end
          end
          if #b.step > 0 then -- kdseg has bfloat16 here: PyTorch's too
            for _, v in ipairs(lines_of(command .. " --bf16")) do
              if v.what == "train_step" then tb.step[#tb.step + 1] = v.median_ms end
              if v.what == "infer" then tb.infer[#tb.infer + 1] = v.median_ms end
            end
          end
        end
      end
    end
    local ks, ki = median(k.step), median(k.infer)
    local row = {bench = "compare_torch", net = net, threads = threads, rounds = rounds, kdseg_step_ms = ks,
                 kdseg_inference_ms = ki, kdseg_inference_unfused_ms = median(k.infer_unfused), kdseg_peak_rss_mib = median(k.rss)}
    if ks and k.gflop and peak[threads] then row.step_fraction_of_fma_peak = k.gflop / (ks / 1e3) / peak[threads] end
    if has_torch and #t.step > 0 then
      row.torch_step_ms, row.torch_inference_ms, row.torch_peak_rss_mib = median(t.step), median(t.infer), median(t.rss)
      row.step_ratio = ks and ks / row.torch_step_ms
      row.peak_rss_ratio = row.kdseg_peak_rss_mib and row.torch_peak_rss_mib and row.kdseg_peak_rss_mib / row.torch_peak_rss_mib
      row.inference_ratio = ki and row.torch_inference_ms and ki / row.torch_inference_ms
      row.inference_unfused_ratio = row.kdseg_inference_unfused_ms and row.kdseg_inference_unfused_ms / row.torch_inference_ms
      if #wg.step > 0 then
        row.kdseg_winograd_step_ms, row.kdseg_winograd_inference_ms = median(wg.step), median(wg.infer)
        row.winograd_step_ratio = row.kdseg_winograd_step_ms / row.torch_step_ms
        row.winograd_inference_ratio = row.kdseg_winograd_inference_ms / row.torch_inference_ms
        row.kdseg_winograd_peak_rss_mib = median(wg.rss)
        row.winograd_peak_rss_ratio = row.kdseg_winograd_peak_rss_mib / row.torch_peak_rss_mib
        row.winograd_kernels = wg.kernels
      end
      if #b.step > 0 then
        row.kdseg_bf16_step_ms, row.kdseg_bf16_inference_ms = median(b.step), median(b.infer)
        row.bf16_step_ratio = row.kdseg_bf16_step_ms / row.torch_step_ms
        row.bf16_inference_ratio = row.kdseg_bf16_inference_ms / row.torch_inference_ms
        if #tb.step > 0 then
          row.torch_bf16_step_ms, row.torch_bf16_inference_ms = median(tb.step), median(tb.infer)
          row.bf16_step_ratio_vs_torch_bf16 = row.kdseg_bf16_step_ms / row.torch_bf16_step_ms
          row.bf16_inference_ratio_vs_torch_bf16 = row.kdseg_bf16_inference_ms / row.torch_bf16_inference_ms
        end
      end
    end
    print(cjson.encode(row))
    io.stdout:flush()
  end
end
