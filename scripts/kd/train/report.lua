-- report: runs/<name>/report.html, one self-contained page (no network):
-- loss and mIoU curves as inline SVG, the per-class IoU table and the
-- prediction grids embedded as data URIs.
local cjson = require("cjson")
local files = require("kd.data.files")

local report = {}

local function escape(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function report.base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for k = 3, 0, -1 do
      local v = math.floor(n / 64 ^ k) % 64
      chars[#chars + 1] = B64:sub(v + 1, v + 1)
    end
    if not b then chars[3], chars[4] = "=", "=" elseif not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

-- A line chart of series {{x, y}, ...} as an SVG string.
function report.svg_chart(title, series, y_label)
  local W, H, L, R, T, B = 520, 260, 56, 12, 28, 36
  if #series == 0 then return "<p>" .. escape(title) .. ": no data yet</p>" end
  local x0, x1, y0, y1 = math.huge, -math.huge, math.huge, -math.huge
  for _, p in ipairs(series) do
    x0, x1 = math.min(x0, p[1]), math.max(x1, p[1])
    y0, y1 = math.min(y0, p[2]), math.max(y1, p[2])
  end
  if x1 == x0 then x1 = x0 + 1 end
  if y1 == y0 then y1 = y0 + 1 end
  local function sx(x) return L + (x - x0) / (x1 - x0) * (W - L - R) end
  local function sy(y) return H - B - (y - y0) / (y1 - y0) * (H - T - B) end
  local points = {}
  for _, p in ipairs(series) do points[#points + 1] = string.format("%.1f,%.1f", sx(p[1]), sy(p[2])) end
  local parts = {string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">', W, H, W, H),
    string.format('<text x="%d" y="18" font-size="14" font-family="sans-serif">%s</text>', L, escape(title)),
    string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>', L, H - B, W - R, H - B),
    string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>', L, T, L, H - B)}
  for k = 0, 4 do
    local y = y0 + (y1 - y0) * k / 4
    parts[#parts + 1] = string.format('<text x="%d" y="%.1f" font-size="10" text-anchor="end" font-family="sans-serif">%.3g</text>', L - 4, sy(y) + 3, y)
    local x = x0 + (x1 - x0) * k / 4
    parts[#parts + 1] = string.format('<text x="%.1f" y="%d" font-size="10" text-anchor="middle" font-family="sans-serif">%d</text>', sx(x), H - B + 14, math.floor(x + 0.5))
  end
  parts[#parts + 1] = string.format('<text x="%d" y="%d" font-size="11" text-anchor="middle" font-family="sans-serif">iteration</text>', (W + L) / 2, H - 4)
  parts[#parts + 1] = string.format('<text x="12" y="%d" font-size="11" font-family="sans-serif" transform="rotate(-90 12 %d)">%s</text>', H / 2, H / 2, escape(y_label))
  parts[#parts + 1] = '<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="' .. table.concat(points, " ") .. '"/>'
  parts[#parts + 1] = "</svg>"
  return table.concat(parts, "\n")
end

-- The curves of a metrics.jsonl: the total loss, each term (by its label,
-- "model.term" with several learning models) and each evaluated model's mIoU.
local function curves(path)
  local c = {loss = {}, terms = {}, term_names = {}, miou = {}, models = {}}
  if not files.exists(path) then return c, nil end
  local last_eval
  for line in io.lines(path) do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" then
      if e.type == "train" then
        c.loss[#c.loss + 1] = {e.iteration, e.loss}
        for name, v in pairs(type(e.terms) == "table" and e.terms or {}) do
          if type(v) == "number" then
            if not c.terms[name] then c.terms[name] = {}; c.term_names[#c.term_names + 1] = name end
            table.insert(c.terms[name], {e.iteration, v})
          end
        end
      elseif e.type == "eval" then
        local model = e.model or ""
        if not c.miou[model] then c.miou[model] = {}; c.models[#c.models + 1] = model end
        table.insert(c.miou[model], {e.iteration, 100 * e.miou})
        last_eval = e
      end
    end
  end
  table.sort(c.term_names)
  return c, last_eval
end

function report.write(dir, results)
  local c, last_eval = curves(dir .. "/metrics.jsonl")
  results = results or (files.exists(dir .. "/results.json") and cjson.decode(files.read(dir .. "/results.json"))) or {}
  local html = {"<!DOCTYPE html><html><head><meta charset='utf-8'><title>" .. escape(results.name or dir) .. "</title>",
    "<style>body{font-family:sans-serif;margin:24px;max-width:1100px} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#eee} td:first-child{text-align:left} img{max-width:100%;image-rendering:pixelated}</style></head><body>",
    "<h1>" .. escape(results.name or dir) .. "</h1>"}
  if results.model then
    html[#html + 1] = string.format("<p>model <b>%s</b> (%s parameters), %s iterations; final mIoU <b>%.2f</b>, best %.2f at iteration %s; %.0f s</p>",
      escape(results.model), tostring(results.parameters), tostring(results.iterations), 100 * (results.final_miou or 0),
      100 * (results.best_miou or 0), tostring(results.best_iteration), results.elapsed or 0)
  end
  html[#html + 1] = report.svg_chart("training loss", c.loss, "loss")
  for _, model in ipairs(c.models) do
    html[#html + 1] = report.svg_chart(model == "" and "validation mIoU" or ("validation mIoU: " .. model), c.miou[model], "mIoU (%)")
  end
  -- each probed pseudo-label source's accuracy (kd.train.pseudo_probe)
  local probes, sources = require("kd.train.pseudo_probe").history(dir), {}
  for source in pairs(probes) do sources[#sources + 1] = source end
  table.sort(sources)
  for _, source in ipairs(sources) do
    local points = {}
    for k, p in ipairs(probes[source]) do points[k] = {p.iteration, 100 * p.accuracy} end
    html[#html + 1] = report.svg_chart("pseudo-label accuracy: " .. source, points, "accuracy (%)")
  end
  if #c.term_names > 1 then
    html[#html + 1] = "<h2>Loss terms</h2>"
    for _, name in ipairs(c.term_names) do html[#html + 1] = report.svg_chart(name, c.terms[name], name) end
  end
  local iou = results.iou or (last_eval and last_eval.iou) or {}
  local names = results.classes or {}
  if #names == 0 then for name in pairs(iou) do names[#names + 1] = name end; table.sort(names) end
  html[#html + 1] = "<h2>Per-class IoU</h2><table><tr><th>class</th><th>IoU (%)</th></tr>"
  for _, name in ipairs(names) do
    local v = iou[name]
    html[#html + 1] = string.format("<tr><td>%s</td><td>%s</td></tr>", escape(name), type(v) == "number" and string.format("%.2f", 100 * v) or "-")
  end
  html[#html + 1] = "</table><h2>Predictions (image / ground truth / prediction)</h2>"
  local grids = kd._C.is_dir(dir .. "/grids") and kd._C.listdir(dir .. "/grids") or {}
  for i = math.max(1, #grids - 3), #grids do
    local name = grids[i]
    html[#html + 1] = "<h3>" .. escape(name) .. "</h3><img alt='" .. escape(name) .. "' src='data:image/png;base64," ..
                      report.base64(files.read(dir .. "/grids/" .. name)) .. "'>"
  end
  html[#html + 1] = "</body></html>"
  kd._C.write_atomic(dir .. "/report.html", table.concat(html, "\n"))
  return dir .. "/report.html"
end

return report
