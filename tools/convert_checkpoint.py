#!/usr/bin/env python3
"""Convert a reference UNETR++ training checkpoint into unetrpp-serve's weights.

The reference training code saves `model_final_checkpoint.model` with torch.save:
a zip holding a dict with `state_dict` plus optimizer state and numpy scalars.
This tool loads it with an allow-listed unpickler (a checkpoint from the
internet must not be able to run code), reads the architecture off the tensor
shapes, and writes a safetensors file whose `__metadata__` holds the model
config ("unetrpp_config", JSON) that `upp-forward` and the server read.

    convert_checkpoint.py model_final_checkpoint.model out.safetensors --preset synapse
    convert_checkpoint.py ckpt.model out.safetensors --patch 64 128 128 [--dtype f16]

The patch size cannot be read off the weights (only the token count can), so a
preset or --patch is required; everything else is derived and cross-checked.
Needs python3-torch (Debian) and numpy. Writes safetensors itself: the format
is a length, a JSON header and raw little-endian bytes, and Debian ships no
safetensors package.
"""
import argparse
import collections
import io
import json
import pickle
import struct
import sys

import torch

PRESETS = {
    "synapse": dict(patch=[64, 128, 128], stem=[2, 4, 4], projection="shared_linear",
                    fusion="concat_projected", res_blocks_after_epa=1),
    "acdc": dict(patch=[16, 160, 160], stem=[1, 4, 4], projection="separate_linear",
                 fusion="concat_projected", res_blocks_after_epa=2),
    "lung": dict(patch=[32, 192, 192], stem=[1, 4, 4], projection="separate_linear",
                 fusion="concat_projected", res_blocks_after_epa=2),
    "tumor": dict(patch=[128, 128, 128], stem=[4, 4, 4], projection="shared_matrix",
                  fusion="sum", res_blocks_after_epa=1),
}

# What a reference checkpoint's pickle may reference, and nothing else.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"), ("torch", "LongStorage"), ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"), ("torch", "DoubleStorage"), ("torch", "IntStorage"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles torch.save's data.pkl, resolving only ALLOWED_GLOBALS.

    torch.load cannot be given a restricted unpickler here: Debian's torch 1.13
    replaces any pickle_module by the stock pickle unless weights_only=True, and
    weights_only refuses the numpy scalars that reference checkpoints contain.
    So the zip archive is read with torch's own reader and the storages are
    materialised the way torch.load does it.
    """

    def __init__(self, file, reader):
        super().__init__(file, encoding="utf-8")
        self._reader = reader
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            if module == "torch" and name.endswith("Storage"):
                return torch.serialization.StorageType(name)  # as torch.load resolves them
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"checkpoint references {module}.{name}, which a UNETR++ checkpoint does not need; "
            "refusing to load it")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        dtype = storage_type.dtype
        if key not in self._storages:
            nbytes = numel * torch._utils._element_size(dtype)
            raw = self._reader.get_storage_from_record(f"data/{key}", nbytes, torch.UntypedStorage)
            # torch 1.13 returns a tensor here, torch 2.x a storage.
            untyped = raw.storage().untyped() if isinstance(raw, torch.Tensor) else raw
            self._storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype)
        return self._storages[key]


def load_state_dict(path):
    try:
        reader = torch._C.PyTorchFileReader(path)
        data = reader.get_record("data.pkl")
        obj = _RestrictedUnpickler(io.BytesIO(data), reader).load()
    except Exception as e:  # a bad file raises many types
        raise SystemExit(f"convert_checkpoint: cannot read '{path}': {e}")
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"convert_checkpoint: '{path}' holds no state_dict of tensors")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    return collections.OrderedDict((k[7:] if k.startswith("module.") else k, v)
                                   for k, v in obj.items())


def infer_config(sd, preset, patch):
    def need(key):
        if key not in sd:
            raise SystemExit(f"convert_checkpoint: not a UNETR++ state dict (no '{key}')")
        return sd[key]

    stem_w = need("unetr_pp_encoder.downsample_layers.0.0.conv.weight")
    enc1 = need("encoder1.conv1.conv.weight")
    out1 = need("out1.conv.conv.weight")
    temp = need("unetr_pp_encoder.stages.0.0.epa_block.temperature")
    depths = [len({k.split(".")[3] for k in sd if k.startswith(f"unetr_pp_encoder.stages.{s}.")})
              for s in range(4)]
    decoder_depth = len({k.split(".")[3] for k in sd if k.startswith("decoder5.decoder_block.0.")})
    pre = "unetr_pp_encoder.stages.0.0.epa_block."
    if pre + "EF" in sd:
        projection = "shared_matrix"
        proj = [sd[f"unetr_pp_encoder.stages.{s}.0.epa_block.EF"].shape[1] for s in range(4)]
        dec_proj = sd["decoder5.decoder_block.0.0.epa_block.EF"].shape[1]
    else:
        shared = torch.equal(need(pre + "E.weight"), need(pre + "F.weight"))
        projection = "shared_linear" if shared else "separate_linear"
        proj = [sd[f"unetr_pp_encoder.stages.{s}.0.epa_block.E.weight"].shape[0] for s in range(4)]
        dec_proj = sd["decoder5.decoder_block.0.0.epa_block.E.weight"].shape[0]
    config = {
        "preset": preset or "custom",
        "in_channels": int(stem_w.shape[1]),
        "num_classes": int(out1.shape[0]),
        "stem": [int(k) for k in stem_w.shape[2:]],
        "feature_size": int(enc1.shape[0]),
        "depths": depths,
        "decoder_depth": decoder_depth,
        "num_heads": int(temp.shape[0]),
        "proj_sizes": [int(p) for p in proj],
        "decoder_proj_size": int(dec_proj),
        "projection": projection,
        "fusion": "concat_projected" if pre + "out_proj.weight" in sd else "sum",
        "res_blocks_after_epa": 2 if "unetr_pp_encoder.stages.0.0.conv52.conv1.conv.weight" in sd else 1,
    }
    if preset:
        p = PRESETS[preset]
        for key in ("stem", "fusion", "res_blocks_after_epa"):
            if config[key] != p[key]:
                raise SystemExit(f"convert_checkpoint: the weights have {key}={config[key]}, "
                                 f"preset '{preset}' has {p[key]}")
        # A synapse-style shared E/F can look "separate" only if the two copies differ.
        if preset == "synapse" and projection == "separate_linear":
            raise SystemExit("convert_checkpoint: synapse checkpoints share E and F, these differ")
        config["projection"] = p["projection"] if projection != "shared_matrix" else projection
        config["patch"] = list(patch) if patch else p["patch"]
    else:
        if not patch:
            raise SystemExit("convert_checkpoint: give --preset or --patch D H W")
        config["patch"] = list(patch)
    tokens = 1
    for p, s in zip(config["patch"], config["stem"]):
        if p % (s * 8):
            raise SystemExit(f"convert_checkpoint: patch {config['patch']} not divisible by stem x 8")
        tokens *= p // s
    pos = need("unetr_pp_encoder.stages.0.0.pos_embed")
    if pos.shape[1] != tokens:
        raise SystemExit(f"convert_checkpoint: patch {config['patch']} gives {tokens} tokens, "
                         f"the weights have {pos.shape[1]}")
    return config


DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.float64: "F64"}


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.view(torch.uint8).numpy().tobytes() if t.dim() else t.reshape(1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (len(text) + 8) % 8) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("output")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"))
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32",
                    help="storage dtype of floating tensors (read back into float32)")
    ap.add_argument("--drop-deep-supervision", action="store_true",
                    help="leave out the out2/out3 training heads")
    args = ap.parse_args(argv)

    sd = load_state_dict(args.checkpoint)
    config = infer_config(sd, args.preset, args.patch)
    target = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    tensors = collections.OrderedDict()
    for name, t in sd.items():
        if args.drop_deep_supervision and name.split(".")[0] in ("out2", "out3"):
            continue
        tensors[name] = t.to(target) if t.is_floating_point() else t
    write_safetensors(args.output, tensors, {
        "unetrpp_config": json.dumps(config),
        "converted_from": "reference UNETR++ checkpoint",
    })
    print(f"wrote {args.output}: {len(tensors)} tensors, config {json.dumps(config)}")


if __name__ == "__main__":
    sys.exit(main())
