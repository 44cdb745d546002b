#!/bin/sh
# The kdseg command line: scripts with arguments, -e, options, sub-commands,
# a script error (message, traceback, non-zero exit), and the library found
# from any working directory. Prints "N passed, N failed".
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
kdseg=${KDSEG:-$root/build/kdseg} # KDSEG: another build (the sanitizer one)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0
check() { # check DESCRIPTION EXPECTED-EXIT TEXT-IN-OUTPUT command...
    what=$1 want_rc=$2 text=$3; shift 3
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" = "$want_rc" ] && printf '%s' "$out" | grep -qF -- "$text"; then passed=$((passed + 1)); else
        failed=$((failed + 1)); echo "FAIL host: $what: exit $rc (want $want_rc), output:"; printf '%s\n' "$out" | tail -8
    fi
}
check_absent() { # check_absent DESCRIPTION TEXT command...: TEXT must not be in the output
    what=$1 text=$2; shift 2
    out=$("$@" 2>&1)
    if printf '%s' "$out" | grep -qF -- "$text"; then
        failed=$((failed + 1)); echo "FAIL host: $what: '$text' in the output:"; printf '%s\n' "$out" | tail -8
    else passed=$((passed + 1)); fi
}
cd "$tmp"
printf 'print("args", arg[0], arg[1], arg[2], #arg)\n' > args.lua
check "script arguments" 0 "args	args.lua	a	b c	2" "$kdseg" args.lua a "b c"
check "-e" 0 "6" "$kdseg" -e "print(kd.ones({2, 3}):sum():item())"
check "--threads" 0 "$(printf "threads\t1")" "$kdseg" --threads 1 -e "print('threads', kd.get_threads())"
check "--seed reproducible" 0 "same" "$kdseg" --seed 9 -e "local a = kd.randn({4}):get(4); kd.manual_seed(9); print(a == kd.randn({4}):get(4) and 'same' or 'different')"
check "--version" 0 "kdseg 0.1.0" "$kdseg" --version
check "--help" 0 "usage: kdseg" "$kdseg" --help
check "unknown option" 2 "unknown option '--bogus'" "$kdseg" --bogus
check "bad --threads" 2 "--threads wants a positive integer" "$kdseg" --threads x
printf 'local function inner() error("broken on purpose") end\ninner()\n' > broken.lua
check "script error message" 1 "broken.lua:1: broken on purpose" "$kdseg" broken.lua
check "script error traceback" 1 "stack traceback" "$kdseg" broken.lua
# A user's error through the library: the user's frames, not the library's
printf 'local function load() return kd.config.load("gone.yaml") end\nload()\n' > via_library.lua
check "error through the library: message" 1 "cannot open gone.yaml" "$kdseg" via_library.lua
check "error through the library: the user's frame" 1 "via_library.lua:2: in main chunk" "$kdseg" via_library.lua
check_absent "error through the library: the library's path shortened to kd/" "scripts/kd/" "$kdseg" via_library.lua
check_absent "error through the library: no library frames" "yaml.lua" "$kdseg" via_library.lua
check_absent "sub-command error: no traceback" "stack traceback" "$kdseg" train gone.yaml
check "KDSEG_TRACEBACK=1: every frame" 1 "in function 'load_file'" env KDSEG_TRACEBACK=1 "$kdseg" train gone.yaml
# the KDSEG_* settings: a typo is an error before anything runs, not the default
check "a setting's unknown value" 2 "KDSEG_CONV_ALGORITHM='drect' is not one of its choices: winograd (the default), direct" env KDSEG_CONV_ALGORITHM=drect "$kdseg" -e "print('ran')"
check_absent "a setting's unknown value: nothing runs" "ran" env KDSEG_CONV_ALGORITHM=drect "$kdseg" -e "print('ran')"
check "an unknown setting" 2 "KDSEG_CONV_ALGORITM is not a kdseg setting" env KDSEG_CONV_ALGORITM=direct "$kdseg" -e "print('ran')"
check "KDSEG_OWN_WINOGRAD's values" 2 "KDSEG_OWN_WINOGRAD='yes' is not one of its choices: auto (the default), always, never" env KDSEG_OWN_WINOGRAD=yes "$kdseg" -e "print('ran')"
check "a setting's named value" 0 "$(printf "direct\tnchw")" env KDSEG_CONV_ALGORITHM=direct KDSEG_LAYOUT=nchw "$kdseg" -e "print(kd.conv_algorithm(), kd.set_layout('nchw'))"
check "a setting's default named" 0 "$(printf "winograd\tblocked")" env KDSEG_CONV_ALGORITHM=winograd KDSEG_LAYOUT=blocked KDSEG_CONV=onednn KDSEG_CONV_PRECISION=f32 KDSEG_OWN_WINOGRAD=auto "$kdseg" -e "print(kd.conv_algorithm(), kd.set_layout('blocked'))"
check "an empty setting reads as unset" 0 "winograd" env KDSEG_CONV_ALGORITHM= "$kdseg" -e "print(kd.conv_algorithm())"
check "error from C" 1 "kd.conv2d: conv2d: weight" "$kdseg" -e "kd.conv2d(kd.zeros({1,3,4,4}), kd.zeros({2,5,3,3}))"
check "missing script" 1 "cannot open script nothere.lua" "$kdseg" nothere.lua
check "unknown command" 1 "'frobnicate' is neither a script nor a command" "$kdseg" frobnicate
check "help command" 0 "commands:" "$kdseg" help
check "synthcity command" 0 "synthcity: 7 images of 32x64" "$kdseg" synthcity --out sc --train 4 --coarse 2 --val 1 --size 32x64 --seed 3
check "synthcity files" 0 "synth_000006_000019_leftImg8bit.png" ls sc/leftImg8bit/train_extra/synth
check "synthcity bad size" 1 "--size must be HxW" "$kdseg" synthcity --out sc --size 128
check "synthcity missing --out" 1 "missing option '--out'" "$kdseg" synthcity --train 2
check "synthcity negative test split" 1 "--test must be a non-negative integer" "$kdseg" synthcity --out sc --test=-1
check "synthcity with a test split" 0 "synthcity: 3 images" "$kdseg" synthcity --out sct --train 1 --coarse 0 --val 1 --test 1 --size 16x32
check "synthcity test images" 0 "synth_000002_000019_leftImg8bit.png" ls sct/leftImg8bit/test/synth
check "splits command" 0 "1_2: 2 labeled, 2 unlabeled" "$kdseg" splits --root sc --fractions 1/2 --seed 1
cat > tiny.lua <<'LUA'
return {name = "tiny", data = {root = "sc", batch_size = 2, workers = 1, augment = {crop = {32, 64}}},
        train = {iterations = 4, log_every = 2, eval_every = 0, checkpoint_every = 0, grids = 1}}
LUA
check "train command" 0 "tiny: final mIoU" "$kdseg" train tiny.lua optim.lr=0.001
check "train with a wrong key" 1 "unknown config key 'optim.lrr'" "$kdseg" train tiny.lua optim.lrr=1
check "train without a config" 1 "a config file is required" "$kdseg" train
# A run folder belongs to one run: a name used before is refused unless the
# run resumes it or overwrites it; a folder in use by a live process is
# refused even then, and a killed process leaves no stale lock.
check "a name used before is refused" 1 "runs/tiny already holds a run" "$kdseg" train tiny.lua
check "the refusal says what to do" 1 "--resume continues it, --overwrite replaces it" "$kdseg" train tiny.lua
check "the earlier run is intact" 0 "results.json" ls runs/tiny
check "--overwrite replaces it" 0 "tiny: final mIoU" "$kdseg" train tiny.lua --overwrite
check "--resume with another model" 1 "runs/tiny: --resume with other settings than its config.json: model.name: \"erfnet\" (was \"bench_student\")" "$kdseg" train tiny.lua --resume model.name=erfnet
check "--resume with more iterations" 0 "tiny: final mIoU" "$kdseg" train tiny.lua --resume train.iterations=6
check "--resume and --overwrite together" 1 "exclude each other" "$kdseg" train tiny.lua --resume --overwrite
# The loader's cache (data.cache_mb) changes no batch: a run without one
# ends with the same weights, a resume may change it, and it has bounds
check "a run keeping no decoded samples" 0 "nocache: final mIoU" "$kdseg" train tiny.lua name=nocache data.cache_mb=0
check "a run keeping them" 0 "cached: final mIoU" "$kdseg" train tiny.lua name=cached data.cache_mb=64
check "the cache changes no weight" 0 "identical" "$kdseg" "$root/tests/train/same_weights.lua" runs/cached runs/nocache
check "--resume with another cache" 0 "cached: final mIoU" "$kdseg" train tiny.lua name=cached --resume data.cache_mb=0 train.iterations=6
check "a negative cache" 1 "'data.cache_mb' must be a number >= 0, got -1" "$kdseg" train tiny.lua name=t0 data.cache_mb=-1
check "a cache beyond the loader's bound" 1 "kd.data.Loader: cache_mb 1000000000 must be 0 (none) to 16777216" "$kdseg" train tiny.lua name=t0 data.cache_mb=1e9
check "a name leaving the runs folder" 1 "name must be a plain relative path" "$kdseg" train tiny.lua name=../outside
check "an absolute name" 1 "name must be a plain relative path" "$kdseg" train tiny.lua name=/tmp/outside
"$kdseg" train tiny.lua name=busy train.iterations=100000 train.log_every=5 > busy.log 2>&1 &
busy=$!
for _ in $(seq 100); do [ -f runs/busy/config.json ] && grep -q "iter 10/" busy.log && break; sleep 0.1; done
check "progress lines reach a log file while the run goes on" 0 "iter 10/100000" cat busy.log
check "a folder in use is refused, even with --overwrite" 1 "runs/busy is in use by another kdseg process (pid $busy)" "$kdseg" train tiny.lua name=busy --overwrite
kill -9 "$busy"; wait "$busy" 2>/dev/null
check "a killed run leaves no stale lock" 0 "busy: final mIoU" "$kdseg" train tiny.lua name=busy --overwrite
# Training data: a split naming images without labels is refused (it would
# train with a loss of 0), one naming a missing image names the line
printf 'leftImg8bit/train/synth/synth_000000_000019_leftImg8bit.png\nleftImg8bit/train/synth/synth_000001_000019_leftImg8bit.png\n' > sc/nolabels.txt
check "a split without labels is refused" 1 "none of the 2 images of stream 'train' (sc/nolabels.txt) has a label file" "$kdseg" train tiny.lua name=nolabels data.train.list=nolabels.txt
printf 'leftImg8bit/train/synth/synth_000000_000019_leftImg8bit.png gtFine/train/synth/synth_000000_000019_gtFine_labelIds.png\nleftImg8bit/train/synth/synth_000001_000019_leftImg8bit.png\n' > sc/some.txt
check "a split partly without labels is said" 0 "1 of 2 images of stream 'train' (sc/some.txt) have no label file" "$kdseg" train tiny.lua name=somelabels data.train.list=some.txt
printf 'leftImg8bit/train/synth/gone_leftImg8bit.png\n' > sc/gone.txt
check "a split naming a missing image" 1 "sc/gone.txt:1: sc/leftImg8bit/train/synth/gone_leftImg8bit.png does not exist" "$kdseg" train tiny.lua name=gone data.train.list=gone.txt
head -c 300 sc/leftImg8bit/train/synth/synth_000001_000019_leftImg8bit.png > sc/cut_leftImg8bit.png
printf 'cut_leftImg8bit.png gtFine/train/synth/synth_000001_000019_gtFine_labelIds.png\n' > sc/cut.txt
check "a truncated image in the training set" 1 "sc/cut_leftImg8bit.png is corrupt or truncated" "$kdseg" train tiny.lua name=cut data.train.list=cut.txt
# Config values must have their default's kind; bounds are checked before training
check "a word for a number" 1 "'data.batch_size' must be a number, got 'two'" "$kdseg" train tiny.lua name=t1 data.batch_size=two
check "a number for a list" 1 "'data.augment.crop' must be a list, got 64" "$kdseg" train tiny.lua name=t2 data.augment.crop=64
check "zero iterations" 1 "'train.iterations' must be an integer >= 1, got 0" "$kdseg" train tiny.lua name=t3 train.iterations=0
check "NaN learning rate" 1 "'optim.lr' must be a finite number, got nan" "$kdseg" train tiny.lua name=t4 optim.lr=nan
check "an empty gradient bucket" 1 "'train.bucket_mb' must be" "$kdseg" train tiny.lua name=t4b train.bucket_mb=0
check "sync_bn not a flag" 1 "sync_bn must be true or false, got 2" "$kdseg" train tiny.lua name=t4c train.sync_bn=2
check "a number for a flag" 1 "'data.augment.hflip' must be true or false, got 1" "$kdseg" train tiny.lua name=t5 data.augment.hflip=1
printf 'name: y\ndata:\n  batch_size: two\n' > typed.yaml
check "a YAML config names the file and key" 1 "typed.yaml: 'data.batch_size' must be a number" "$kdseg" train typed.yaml
check_absent "refused configs wrote no run" "t1" ls runs
check "train again from a run's config.json" 0 "tiny_again: final mIoU" "$kdseg" train runs/tiny/config.json name=tiny_again
check "train in another runs folder names its report" 0 "elsewhere/tiny/report.html" "$kdseg" train tiny.lua runs_dir=elsewhere
check "the report is there" 0 "report.html" ls elsewhere/tiny
printf '{"name": "broken",' > broken.json
check "train with a broken JSON config" 1 "broken.json: " "$kdseg" train broken.json
check "eval command" 0 "mIoU" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --split val --out eval.json
check "eval JSON" 0 '"miou":' cat eval.json
check "eval with flip" 0 "mIoU" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --split val --flip --out eval_flip.json
check "eval JSON says flip" 0 '"flip":true' cat eval_flip.json
# Sliding-window evaluation: on the command line, for predict, and inside training
check "eval by sliding window" 0 "mIoU" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --split val --crop 16x32 --out eval_crop.json
check "eval JSON says crop" 0 '"crop":[16,32]' cat eval_crop.json
check "eval by overlapping windows" 0 "mIoU" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --split val --crop 16x32 --stride 8x16 --out eval_stride.json
check "eval JSON says stride" 0 '"stride":[8,16]' cat eval_stride.json
check "--stride without --crop" 1 "--stride needs --crop" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --split val --stride 8x16
# The official protocol: category IoU, and predictions as label ids in the official scripts' layout
check "eval reports category IoU" 0 "category mIoU" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --split val --predictions official --out eval_official.json
check "eval JSON has category IoU" 0 '"vehicle":' cat eval_official.json
check "a run's results.json has category IoU" 0 '"category_miou":' cat runs/tiny/results.json
check "official layout: one flat PNG per image, named after it" 0 "synth_000004_000019_leftImg8bit.png" ls official
"$kdseg" predict --checkpoint runs/tiny/checkpoints/last.safetensors --input sc/leftImg8bit/val/synth/synth_000004_000019_leftImg8bit.png --out pred_ids --ids label > /dev/null
check "the official prediction holds predict's label ids" 0 "same" "$kdseg" -e "local a, b = kd.image.read('official/synth_000004_000019_leftImg8bit.png'), kd.image.read('pred_ids/synth_000004_000019_labelIds.png'); local same = a:numel() == b:numel(); for i = 1, a:numel() do same = same and a:get(i) == b:get(i) end; print(same and 'same' or 'differ')"
check "eval with a bad --crop" 1 "--crop must be HxW" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --split val --crop 16
check "predict by sliding window" 0 "predict: 1 image(s)" "$kdseg" predict --checkpoint runs/tiny/checkpoints/best.safetensors --input sc/leftImg8bit/val/synth/synth_000004_000019_leftImg8bit.png --out pred_crop --crop 16x32
check "training evaluates by sliding window" 0 "tiny_crop: final mIoU" "$kdseg" train tiny.lua name=tiny_crop train.eval_every=2 "eval.crop=[16, 32]"
check "predict command" 0 "predict: 1 image(s) -> pred" "$kdseg" predict --checkpoint runs/tiny/checkpoints/best.safetensors --input sc/leftImg8bit/val/synth/synth_000004_000019_leftImg8bit.png --out pred --ids label --color
check "predict writes label ids and colours" 0 "synth_000004_000019_labelIds.png" ls pred
check "predicted PNG" 0 "1	32	64" "$kdseg" -e "local t = kd.image.read('pred/synth_000004_000019_labelIds.png'); print(t:size(1), t:size(2), t:size(3))"
check "predict on a folder" 0 "predict: 2 image(s)" "$kdseg" predict --checkpoint runs/tiny/checkpoints/best.safetensors --input sc/leftImg8bit/train_extra --out pred2
check "predict a missing checkpoint" 1 "cannot open" "$kdseg" predict --checkpoint nothere.safetensors --input sc --out p
# Arguments that name the wrong kind of thing, or absurd sizes
check "a folder given as a checkpoint" 1 "cannot read sc (a folder?)" "$kdseg" eval --checkpoint sc --root sc
check "a window of 0x0" 1 "--crop must be HxW with sizes of at least 1" "$kdseg" eval --checkpoint runs/tiny/checkpoints/last.safetensors --root sc --crop 0x0
check "a width for a fixed-width model" 1 "model bench_student takes no option 'width'" "$kdseg" train tiny.lua name=w1 model.width=8
check "a negative width" 1 "model erfnet: width must be an integer >= 1, got -1" "$kdseg" train tiny.lua name=w2 model.name=erfnet model.width=-1
check "a billion images" 1 "at most 1000000 images in all" "$kdseg" synthcity --out big --train 1000000000
# JPEG images: a dataset in the layout with .jpg images trains, evaluates and predicts
cp -r sc scj && "$kdseg" -e 'for _, p in ipairs(kd.data.files.find("scj/leftImg8bit", ".png")) do
  kd.image.write((p:gsub("%.png$", ".jpg")), kd.image.read(p, true)); os.remove(p) end'
check "JPEG images: no PNG left" 0 "synth_000004_000019_leftImg8bit.jpg" ls scj/leftImg8bit/val/synth
check "JPEG images: training" 0 "jpg: final mIoU" "$kdseg" train tiny.lua name=jpg data.root=scj
check "JPEG images: eval" 0 "mIoU" "$kdseg" eval --checkpoint runs/jpg/checkpoints/last.safetensors --root scj --split val
check "JPEG images: predict on a folder" 0 "predict: 1 image(s)" "$kdseg" predict --checkpoint runs/jpg/checkpoints/last.safetensors --input scj/leftImg8bit/val --out predj
cp scj/leftImg8bit/val/synth/synth_000004_000019_leftImg8bit.jpg scj/gtFine/val/synth/synth_000004_000019_gtFine_labelIds.png
check "JPEG label map refused" 1 "is a JPEG; label and weight maps must be PNG" "$kdseg" eval --checkpoint runs/jpg/checkpoints/last.safetensors --root scj --split val
check "models command" 0 "bench_student                                                 210019" "$kdseg" models --size 128x256
check "models at Cityscapes' resolution by default" 0 "pspnet_resnet101                                            65583699       4073.6" "$kdseg" models
check "models with an option" 0 "pspnet_resnet50            deep_stem=1,output_stride=16     46715347" "$kdseg" models --option output_stride=16 --option deep_stem=1
check "models with a bad option value" 1 "output_stride must be one of 8, 16" "$kdseg" models --option output_stride=4
check "models with a malformed option" 1 "--option must be key=integer, got 'output_stride'" "$kdseg" models --option output_stride
check "train with a missing pretrained file" 1 "nothere.safetensors" "$kdseg" train tiny.lua name=t6 model.name=deeplabv3plus_resnet18 model.width=8 model.pretrained=nothere.safetensors
check "compare_torch with an unknown setting" 1 "compare_torch: unknown setting 'fast' (direct, winograd or bf16" "$kdseg" "$root/tests/bench/compare_torch.lua" 1 fast
echo "host tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
