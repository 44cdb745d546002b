-- kdseg help: the sub-commands and where to read more.
return function()
  print("kdseg " .. kd.version .. " - semi-supervised segmentation with knowledge distillation")
  print("usage: kdseg [--threads N] [--seed N] [script.lua | command] [args...]")
  print("commands: " .. table.concat(require("kd.cli").commands(), ", "))
  print("In the REPL (kdseg alone), help(kd.conv2d) or ?kd.conv2d gives short help.")
end
