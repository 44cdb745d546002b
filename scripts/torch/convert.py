#!/usr/bin/python3
"""Weights between PyTorch and kdseg (run with Debian's python3-torch).

  to-kdseg  IN.pth OUT.safetensors [--prefix backbone.] [--drop fc.] ...
      A PyTorch or torchvision checkpoint (a state dict, or a dict holding
      one under "state_dict", "model" or "net"; DataParallel's "module."
      stripped) to a safetensors file kdseg loads: float tensors as float32,
      integer ones as int64. --drop removes keys starting with a prefix
      (fc. for torchvision's ResNets; features.18. and classifier. for
      MobileNetV2), --prefix prepends one (backbone. for a backbone inside a
      kdseg segmentation network). Keys are kept as they are otherwise.
  to-torch  IN.safetensors OUT.pth [--check]
      A kdseg weights file (a checkpoint of a run) to a PyTorch state dict
      (num_batches_tracked back to a 0-dimensional tensor). --check builds
      the network its metadata names from scripts/torch/kdseg_models.py and
      loads the weights into it with load_state_dict(strict=True).

No safetensors package is needed: the format (an 8-byte little-endian
header length, a JSON header, the raw data) is read and written here.
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
CODES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        sys.exit("%s: truncated (shorter than the 8-byte header length)" % path)
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        sys.exit("%s: truncated: a header of %d bytes, but %d follow" % (path, n, len(data) - 8))
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base, tensors = 8 + n, {}
    for name, entry in header.items():
        if entry["dtype"] not in DTYPES:
            sys.exit("%s: tensor %s has dtype %s, which this script does not read" % (path, name, entry["dtype"]))
        b, e = entry["data_offsets"]
        buf = bytearray(data[base + b:base + e])
        t = torch.frombuffer(buf, dtype=DTYPES[entry["dtype"]]) if e > b else torch.empty(0, dtype=DTYPES[entry["dtype"]])
        tensors[name] = t.reshape(entry["shape"]).clone()
    return tensors, meta


def write_safetensors(path, tensors, meta):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def state_dict_of(obj, path):
    """The state dict inside what torch.load returned."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "net", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        sys.exit("%s: no state dict found (a dict of tensors, or one under state_dict, model or net)" % path)
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def to_kdseg(args):
    state = state_dict_of(torch.load(args.input, map_location="cpu"), args.input)
    out, dropped = {}, 0
    for name, t in state.items():
        if any(name.startswith(d) for d in args.drop):
            dropped += 1
            continue
        if t.dim() > 4:
            sys.exit("%s: tensor %s has %d dimensions; kdseg holds at most 4" % (args.input, name, t.dim()))
        t = t.float() if t.is_floating_point() else t.long()
        out[args.prefix + name] = t.reshape([1]) if t.dim() == 0 else t
    write_safetensors(args.output, out, {"format": "pytorch state dict", "source": os.path.basename(args.input)})
    print("%s: %d tensors written, %d dropped" % (args.output, len(out), dropped))


def to_torch(args):
    tensors, meta = read_safetensors(args.input)
    state = {}
    for name, t in tensors.items():
        state[name] = t.reshape([]).long() if name.endswith("num_batches_tracked") else t
    if args.check:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import kdseg_models
        if "model" not in meta:
            sys.exit("%s: no model config in the metadata (not a kdseg weights file?)" % args.input)
        config = json.loads(meta["model"])
        net = kdseg_models.build(config["name"], **config.get("options", {}))
        net.load_state_dict(state, strict=True)
        print("%s: loads into %s with strict=True" % (args.input, config["name"]))
    torch.save(state, args.output)
    print("%s: %d tensors written" % (args.output, len(state)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-kdseg", help="a .pth checkpoint to safetensors for kdseg")
    a.add_argument("input")
    a.add_argument("output")
    a.add_argument("--prefix", default="", help="prepended to every name (e.g. backbone.)")
    a.add_argument("--drop", action="append", default=[], help="drop names starting with this (repeatable)")
    b = sub.add_parser("to-torch", help="a kdseg weights file to a .pth state dict")
    b.add_argument("input")
    b.add_argument("output")
    b.add_argument("--check", action="store_true", help="load it into the PyTorch network, strictly")
    args = parser.parse_args()
    to_kdseg(args) if args.command == "to-kdseg" else to_torch(args)


if __name__ == "__main__":
    main()
