-- The image normalisation every loader applies unless told otherwise:
-- ImageNet's per-channel mean and standard deviation (of pixels in [0, 1]),
-- what torchvision's pretrained backbones expect. Declared here once; the
-- loaders, the training defaults and the checkpoints' metadata read it.
return {mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}}
