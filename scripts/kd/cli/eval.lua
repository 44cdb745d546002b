-- kdseg eval: a checkpoint on a dataset -> per-class IoU table and JSON.
--   kdseg eval --checkpoint runs/x/checkpoints/best.safetensors --root data/synthcity --split val
local argparse = require("argparse")
local cjson = require("cjson")
local checkpoint = require("kd.train.checkpoint")
local evaluate = require("kd.train.evaluate")

return function(...)
  local parser = argparse("kdseg eval", "Evaluate a checkpoint: per-class IoU, mIoU, pixel accuracy.")
  parser:option("--checkpoint", "Weights file (safetensors) written by kdseg train."):count(1)
  parser:option("--root", "Dataset root."):count(1)
  parser:option("--split", "Split folder of the layout.", "val")
  parser:option("--list", "A split file instead of --split.")
  parser:option("--labels", "fine, coarse or true_fine.", "fine")
  parser:option("--classes", "Class table: cityscapes or a YAML file (default: the checkpoint's).")
  parser:option("--crop", "Sliding-window size HxW for larger images (memory is bounded by the window's).")
  parser:option("--stride", "Sliding-window step HxW (default: 2/3 of the window).")
  parser:option("--predictions", "Also write each prediction here as a PNG of label ids named after its image "
                .. "(<city>_<seq>_<frame>_leftImg8bit.png, flat): the layout of the official Cityscapes scripts.")
  parser:flag("--flip", "Average each image's logits with its mirror image's (test-time augmentation).")
  parser:option("--batch-size", "Images per batch.", "4"):convert(tonumber)
  parser:option("--workers", "Loader threads.", "2"):convert(tonumber)
  parser:option("--out", "Write the scores as JSON here.")
  local args = parser:parse({...})
  local model, model_config = checkpoint.load_model(args.checkpoint)
  local classes = args.classes and kd.data.classes.get(args.classes)
                  or checkpoint.classes_of(model_config)
  if classes.count ~= #model_config.classes then
    error(string.format("kdseg eval: the class table has %d classes, the checkpoint %d", classes.count, #model_config.classes), 0)
  end
  local spec = {root = args.root, classes = classes}
  if args.list then spec.list = args.list else spec.split, spec.labels = args.split, args.labels end
  local ds = kd.data.Dataset(spec)
  local loader = kd.data.Loader(ds, {batch_size = args.batch_size, workers = args.workers,
                                     augment = {mean = model_config.mean, std = model_config.std}})
  local cli = require("kd.cli")
  local crop = args.crop and {cli.parse_size(args.crop, "kdseg eval: --crop")} or nil
  local stride = args.stride and {cli.parse_size(args.stride, "kdseg eval: --stride")} or nil
  if stride and not crop then error("kdseg eval: --stride needs --crop", 0) end
  local write = args.predictions and require("kd.cli.official").prediction_writer(args.predictions, ds, classes)
  kd._C.reset_peak_memory()
  local start = kd._C.clock()
  local confusion = evaluate.run(model, loader, classes, {crop = crop, stride = stride, flip = args.flip, on_batch = write})
  local seconds = kd._C.clock() - start
  print(confusion:table(classes))
  local peak = kd._C.memory().peak_bytes
  print(string.format("%d images in %.1f s (%.2f s per image); tensor memory peak %.2f GiB", #ds.items, seconds,
                      seconds / math.max(#ds.items, 1), peak / 2 ^ 30))
  if args.predictions then print("predictions (label ids, official layout): " .. args.predictions) end
  if args.out then
    local s = confusion:scores()
    local category_iou, category_miou = confusion:named_category_iou(classes, cjson.null)
    kd._C.write_atomic(args.out, cjson.encode({checkpoint = args.checkpoint, images = #ds.items, flip = args.flip or false,
                                               crop = crop or cjson.null, stride = stride or cjson.null, miou = s.miou,
                                               pixel_accuracy = s.pixel_accuracy, iou = confusion:named_iou(s, cjson.null),
                                               category_miou = category_miou or cjson.null,
                                               category_iou = category_iou or cjson.null,
                                               seconds_per_image = seconds / math.max(#ds.items, 1),
                                               tensor_peak_bytes = peak}) .. "\n")
  end
end
