-- metrics: the Cityscapes evaluation. One confusion matrix over the whole
-- set (not a mean over images); IoU_c = TP / (TP + FP + FN); pixels whose
-- ground truth is ignored count nowhere; mIoU is the mean of the IoUs that are
-- defined (a class absent from both prediction and truth has none).
local C = require("kd._C")
local class = require("kd.infra.class")

local Confusion = class("data.Confusion")

-- Confusion(classes) with a class table, or Confusion(count[, names]).
function Confusion:__init(classes, names)
  if type(classes) == "table" then
    self.count, self.names = classes.count, classes.names
  elseif type(classes) == "number" and classes >= 1 and classes % 1 == 0 then
    self.count, self.names = classes, names
  else
    error("data.Confusion: give a class table or a class count", 2)
  end
  self.matrix = kd.zeros({self.count, self.count}, "int64")
end

-- prediction and target: label maps of one shape (int32 or uint8 train ids).
function Confusion:update(prediction, target)
  C.confusion_update(self.matrix, prediction, target)
  return self
end

function Confusion:reset() self.matrix:fill_(0) end



-- counts[t][p], 1-based
function Confusion:counts()
  local k, flat, out = self.count, self.matrix:flat(), {}
  for t = 1, k do
    out[t] = {}
    for p = 1, k do out[t][p] = flat[(t - 1) * k + p] end
  end
  return out
end

-- {iou = {per class or false}, miou, pixel_accuracy, defined}
function Confusion:scores()
  local m, k = self:counts(), self.count
  local iou, sum, defined, correct, total = {}, 0, 0, 0, 0
  for c = 1, k do
    local tp, fp, fn = m[c][c], 0, 0
    for o = 1, k do
      if o ~= c then fp, fn = fp + m[o][c], fn + m[c][o] end
      total = total + m[c][o]
    end
    correct = correct + tp
    local denominator = tp + fp + fn
    if denominator > 0 then
      iou[c] = tp / denominator
      sum, defined = sum + iou[c], defined + 1
    else
      iou[c] = false
    end
  end
  return {iou = iou, miou = defined > 0 and sum / defined or 0, defined = defined,
          pixel_accuracy = total > 0 and correct / total or 0, pixels = total}
end

function Confusion:miou() return self:scores().miou end

-- The official evaluation's category scores: the confusion summed over the
-- classes of each category (a pixel of one vehicle predicted as another is
-- right), then IoU per category and their mean. nil when the class table
-- has no categories. {iou = {per category or false}, miou, names}
function Confusion:category_scores(classes)
  if not (classes and classes.category_of) then return nil end
  local m, n = self:counts(), #classes.categories
  local grouped = {}
  for a = 1, n do grouped[a] = {} for b = 1, n do grouped[a][b] = 0 end end
  for t = 1, self.count do
    for p = 1, self.count do
      local a, b = classes.category_of[t], classes.category_of[p]
      grouped[a][b] = grouped[a][b] + m[t][p]
    end
  end
  local iou, sum, defined = {}, 0, 0
  for a = 1, n do
    local tp, fp, fn = grouped[a][a], 0, 0
    for b = 1, n do if b ~= a then fp, fn = fp + grouped[b][a], fn + grouped[a][b] end end
    if tp + fp + fn > 0 then
      iou[a] = tp / (tp + fp + fn)
      sum, defined = sum + iou[a], defined + 1
    else
      iou[a] = false
    end
  end
  return {iou = iou, miou = defined > 0 and sum / defined or 0, names = classes.categories}
end

-- class name -> IoU, with `undefined` (cjson.null for JSON) where a class has none.
function Confusion:named_iou(scores, undefined)
  scores = scores or self:scores()
  local out = {}
  for c = 1, self.count do
    local name = self.names and self.names[c] or tostring(c - 1)
    if scores.iou[c] then out[name] = scores.iou[c] else out[name] = undefined end
  end
  return out
end

-- category name -> IoU (`undefined` where a category has none), and the
-- categories' mean; nil when the class table has no categories.
function Confusion:named_category_iou(classes, undefined)
  local cs = self:category_scores(classes)
  if not cs then return nil end
  local out = {}
  for a, name in ipairs(cs.names) do
    if cs.iou[a] then out[name] = cs.iou[a] else out[name] = undefined end
  end
  return out, cs.miou
end

-- A printed table: one line per class with its IoU, then mIoU and accuracy;
-- then the categories' IoU and their mean, when classes has categories.
function Confusion:table(classes)
  local s = self:scores()
  local lines = {string.format("%-16s %7s", "class", "IoU")}
  for c = 1, self.count do
    local name = self.names and self.names[c] or tostring(c - 1)
    lines[#lines + 1] = string.format("%-16s %7s", name, s.iou[c] and string.format("%.2f", 100 * s.iou[c]) or "-")
  end
  lines[#lines + 1] = string.format("%-16s %7.2f", "mIoU", 100 * s.miou)
  lines[#lines + 1] = string.format("%-16s %7.2f", "pixel accuracy", 100 * s.pixel_accuracy)
  local cs = self:category_scores(classes)
  if cs then
    lines[#lines + 1] = string.format("%-16s %7s", "category", "IoU")
    for a, name in ipairs(cs.names) do
      lines[#lines + 1] = string.format("%-16s %7s", name, cs.iou[a] and string.format("%.2f", 100 * cs.iou[a]) or "-")
    end
    lines[#lines + 1] = string.format("%-16s %7.2f", "category mIoU", 100 * cs.miou)
  end
  return table.concat(lines, "\n")
end

return {Confusion = Confusion}
