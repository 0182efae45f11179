#!/usr/bin/env python3
"""Convert a reference UNETR++ training checkpoint into unetrpp-serve's weights.

The reference training code saves `model_final_checkpoint.model` with torch.save:
a zip holding a dict with `state_dict` plus optimizer state and numpy scalars.
This tool loads it with an allow-listed unpickler (a checkpoint from the
internet must not be able to run code), reads the architecture off the tensor
shapes, and writes a safetensors file whose `__metadata__` holds the model
config ("unetrpp_config", JSON) that `upp-forward` and the server read, and the
inference plan ("unetrpp_plan", docs/preprocessing.md) when --plan gives one.

    convert_checkpoint.py model_final_checkpoint.model out.safetensors --plan plans.pkl
    convert_checkpoint.py ckpt.model out.safetensors --preset synapse --plan plan.json
    convert_checkpoint.py ckpt.model out.safetensors --patch 64 128 128 [--dtype f16]
    convert_checkpoint.py --plan plans.pkl --plan-out plan.json [--labels dataset.json]

The patch size cannot be read off the weights, only its token count: without
--preset or --patch the tool picks the one published preset whose stem,
projection, fusion, residual blocks and token count the weights have (and says
so), and otherwise lists what it read and how each preset differs.

--plan takes our plan JSON or an nnU-Net v1 `plans.pkl` (what the reference
code trains with), read with its own allow-list (numpy arrays and scalars,
OrderedDict): target spacing, axis order, per-channel normalisation with the
training foreground's statistics, patch, classes and (with --labels
dataset.json) label names. Either way the plan is checked against the network
(patch, classes, channels) before it is embedded; --plan-out writes it as a
JSON file for the server's --plan.

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


def _tokens(patch, stem):
    n = 1
    for p, s in zip(patch, stem):
        n *= p // s
    return n


def _describe(read):
    return (f"stem {read['stem']}, {read['tokens']} tokens at stage 0 (pos_embed), projection "
            f"{read['projection']}, fusion {read['fusion']}, {read['res_blocks_after_epa']} residual "
            f"block(s) after each EPA")


def preset_differences(name, read):
    """How the architecture read off the weights differs from preset `name` (empty: it matches)."""
    p = PRESETS[name]
    diffs = []
    if read["stem"] != p["stem"]:
        diffs.append(f"stem {p['stem']}")
    else:
        tokens = _tokens(p["patch"], p["stem"])
        if read["tokens"] != tokens:
            diffs.append(f"patch {'x'.join(map(str, p['patch']))} gives {tokens} tokens")
    # Equal E and F weights cannot tell "separate" from "shared" apart, so only
    # a synapse preset (shared) is ruled out by E != F, and the matrix form is
    # its own kind.
    if (read["projection"] == "shared_matrix") != (p["projection"] == "shared_matrix") or \
            (p["projection"] == "shared_linear" and read["projection"] == "separate_linear"):
        diffs.append(f"projection {p['projection']}")
    for key in ("fusion", "res_blocks_after_epa"):
        if read[key] != p[key]:
            diffs.append(f"{key} {p[key]}")
    return diffs


def infer_config(sd, preset, patch):
    def need(key):
        if key not in sd:
            raise SystemExit(f"convert_checkpoint: not a UNETR++ state dict (no '{key}')")
        return sd[key]

    stem_w = need("unetr_pp_encoder.downsample_layers.0.0.conv.weight")
    enc1 = need("encoder1.conv1.conv.weight")
    out1 = need("out1.conv.conv.weight")
    temp = need("unetr_pp_encoder.stages.0.0.epa_block.temperature")
    pos = need("unetr_pp_encoder.stages.0.0.pos_embed")
    depths = [len({k.split(".")[3] for k in sd if k.startswith(f"unetr_pp_encoder.stages.{s}.")})
              for s in range(4)]
    decoder_depth = len({k.split(".")[3] for k in sd if k.startswith("decoder5.decoder_block.0.")})
    pre = "unetr_pp_encoder.stages.0.0.epa_block."
    if pre + "EF" in sd:
        projection = "shared_matrix"
        proj = [need(f"unetr_pp_encoder.stages.{s}.0.epa_block.EF").shape[1] for s in range(4)]
        dec_proj = need("decoder5.decoder_block.0.0.epa_block.EF").shape[1]
    else:
        shared = torch.equal(need(pre + "E.weight"), need(pre + "F.weight"))
        projection = "shared_linear" if shared else "separate_linear"
        proj = [need(f"unetr_pp_encoder.stages.{s}.0.epa_block.E.weight").shape[0] for s in range(4)]
        dec_proj = need("decoder5.decoder_block.0.0.epa_block.E.weight").shape[0]
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
    read = dict(config, tokens=int(pos.shape[1]))
    if not preset and not patch:
        matches = [name for name in sorted(PRESETS) if not preset_differences(name, read)]
        if len(matches) > 1:
            raise SystemExit(f"convert_checkpoint: the weights ({_describe(read)}) match presets "
                             f"{', '.join(matches)} alike: give --preset NAME or --patch D H W")
        if not matches:
            why = "; ".join(f"{name}: {', '.join(preset_differences(name, read))}" for name in sorted(PRESETS))
            raise SystemExit(
                f"convert_checkpoint: cannot infer the preset: the weights have {_describe(read)}; no preset "
                f"has all of that ({why}). Give --patch D H W (the patch / stem {read['stem']} must multiply "
                f"to {read['tokens']} tokens), with --preset NAME if the architecture is that preset's")
        preset = matches[0]
        config["preset"] = preset
        print(f"convert_checkpoint: the weights match preset '{preset}' ({_describe(read)}): "
              f"patch {'x'.join(map(str, PRESETS[preset]['patch']))}")
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
        config["patch"] = list(patch)
    for p, s in zip(config["patch"], config["stem"]):
        if p % (s * 8):
            raise SystemExit(f"convert_checkpoint: patch {config['patch']} not divisible by stem x 8")
    tokens = _tokens(config["patch"], config["stem"])
    if read["tokens"] != tokens:
        raise SystemExit(f"convert_checkpoint: patch {config['patch']} gives {tokens} tokens, "
                         f"the weights have {read['tokens']}")
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


# ---------------------------------------------------------------------------
# The inference plan (docs/preprocessing.md, "The plan file"). The server's
# reader (preprocessing/plan.cc) is the authority; this check catches the
# same mistakes before a 200 MB file is written, and all of them at once.

PLAN_DEFAULTS = collections.OrderedDict([
    ("target_spacing", [3.0, 0.76, 0.76]), ("transpose", [0, 1, 2]), ("normalization", None),
    ("crop", None), ("crop_to_nonzero", None), ("patch", [64, 128, 128]), ("step", 0.5), ("min_step", 0.25),
    ("gaussian_sigma_scale", 0.125), ("mirror_axes", []), ("anisotropy_threshold", 3.0),
    ("num_classes", 14), ("labels", []),
])
PLAN_HINTS = {"patch_size": "patch", "crop_size": "patch", "spacing": "target_spacing",
              "current_spacing": "target_spacing", "transpose_forward": "transpose",
              "normalization_schemes": "normalization", "use_mask_for_norm": "normalization[c].use_nonzero_mask",
              "step_size": "step", "mirror": "mirror_axes", "classes": "num_classes"}
CROP_MODES = ("body", "nonzero", "none")
CHANNEL_KEYS = {"ct": ["clip_low", "clip_high", "mean", "std"], "zscore": ["use_nonzero_mask"], "none": []}
CHANNEL_HINTS = {"sd": "std", "percentile_00_5": "clip_low", "percentile_99_5": "clip_high",
                 "use_mask_for_norm": "use_nonzero_mask"}


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_integer(v):
    return _is_number(v) and float(v).is_integer()


def _show(v):
    """A value as the server's messages show it (compact JSON)."""
    return json.dumps(v, separators=(",", ":"))


def plan_problems(plan, config=None):
    """Every problem of a plan (a dict as read from JSON), and with `config` its mismatches with the network."""
    if not isinstance(plan, dict):
        return [f"plan: must be a JSON object, got {type(plan).__name__}"]
    problems = []
    bad = lambda field, what: problems.append(f"plan.{field}: {what}")  # noqa: E731
    for key in plan:
        if key not in PLAN_DEFAULTS:
            hint = PLAN_HINTS.get(key)
            bad(key, f'unknown field (did you mean "{hint}"?)' if hint else
                f"unknown field (known: {', '.join(PLAN_DEFAULTS)})")
    p = {k: plan.get(k, v) for k, v in PLAN_DEFAULTS.items()}

    def triple(key, integer, ok):
        v = p[key]
        kind = "integers" if integer else "numbers"
        if not (isinstance(v, list) and len(v) == 3 and all((_is_integer if integer else _is_number)(x) for x in v)):
            bad(key, f"must be an array of 3 {kind}, got {_show(v)}")
            return False
        return bool(ok(v))  # ok() reports its own problem and returns None

    triple("target_spacing", False, lambda v: all(0 < x <= 1e4 for x in v) or
           bad("target_spacing", f"every axis must be > 0 and at most 1e4 (mm), got {_show(v)}"))
    patch_ok = triple("patch", True, lambda v: all(1 <= x <= 4096 for x in v) or
                      bad("patch", f"every axis must be in [1, 4096], got {_show(v)}"))
    triple("transpose", True, lambda v: sorted(v) == [0, 1, 2] or
           bad("transpose", f"must be a permutation of 0, 1, 2, got {_show(v)}"))
    if "crop" in plan and "crop_to_nonzero" in plan:
        bad("crop_to_nonzero", 'give "crop" alone (crop_to_nonzero is its older form: true = "nonzero", '
            'false = "none")')
    elif "crop" in plan and p["crop"] not in CROP_MODES:
        bad("crop", f'must be "body", "nonzero" or "none", got {_show(p["crop"])}')
    elif "crop_to_nonzero" in plan and not isinstance(p["crop_to_nonzero"], bool):
        bad("crop_to_nonzero", f"must be true or false, got {_show(p['crop_to_nonzero'])}")
    for key, low, high in (("step", 0, 1), ("min_step", 0, 1), ("gaussian_sigma_scale", 0, 10)):
        if not _is_number(p[key]) or not low < p[key] <= high:
            bad(key, f"must be a number in ({low}, {high}], got {_show(p[key])}")
    if not _is_number(p["anisotropy_threshold"]) or p["anisotropy_threshold"] < 1:
        bad("anisotropy_threshold", f"must be a number >= 1, got {_show(p['anisotropy_threshold'])}")
    axes = p["mirror_axes"]
    if not isinstance(axes, list) or not all(_is_integer(a) and 0 <= a <= 2 for a in axes) or \
            len(set(axes)) != len(axes):
        bad("mirror_axes", f"must list distinct axes 0 (D), 1 (H), 2 (W), got {_show(axes)}")
    classes_ok = _is_integer(p["num_classes"]) and 2 <= p["num_classes"] <= 65535
    if not classes_ok:
        bad("num_classes", f"must be an integer in [2, 65535], got {_show(p['num_classes'])}")

    norm = p["normalization"]
    channels_ok = False
    if norm is None:
        norm = [{"scheme": "ct", "clip_low": -1000, "clip_high": 1000, "mean": 0, "std": 1}]  # the reader's default
    if not isinstance(norm, list) or not 1 <= len(norm) <= 16:
        bad("normalization", f"must be an array with one entry per input channel (1 to 16), got {_show(norm)}")
    else:
        channels_ok = True
        for c, e in enumerate(norm):
            f = f"normalization[{c}]"
            if not isinstance(e, dict):
                bad(f, f"must be an object such as {{\"scheme\": \"zscore\"}}, got {_show(e)}")
                continue
            scheme = e.get("scheme")
            if scheme not in CHANNEL_KEYS:
                bad(f + ".scheme", f'must be "ct", "zscore" or "none", got {_show(scheme)}')
                continue
            takes = CHANNEL_KEYS[scheme]
            for key in e:
                if key != "scheme" and key not in takes:
                    hint = CHANNEL_HINTS.get(key)
                    bad(f"{f}.{key}", f'unknown field (did you mean "{hint}"?)' if hint in takes else
                        f"unknown field for scheme \"{scheme}\" (it takes {', '.join(takes) or 'nothing else'})")
            if scheme == "ct":
                for key in takes:
                    if key not in e:
                        bad(f"{f}.{key}", 'missing (scheme "ct" needs clip_low, clip_high, mean and std)')
                    elif not _is_number(e[key]):
                        bad(f"{f}.{key}", f"must be a number, got {_show(e[key])}")
                if all(_is_number(e.get(k)) for k in takes):
                    if e["clip_low"] >= e["clip_high"]:
                        bad(f, f"clip_low must be below clip_high, got {e['clip_low']} and {e['clip_high']}")
                    if e["std"] <= 0:
                        bad(f, f"std must be > 0, got {e['std']}")
            elif scheme == "zscore" and not isinstance(e.get("use_nonzero_mask", False), bool):
                bad(f + ".use_nonzero_mask", f"must be true or false, got {_show(e['use_nonzero_mask'])}")
        first = norm[0].get("scheme") if isinstance(norm[0], dict) else None
        if p["crop"] == "body" and first in CHANNEL_KEYS and first != "ct":
            bad("crop", f'"body" finds the body in Hounsfield units: normalization[0] must be "ct", got "{first}"')

    labels = p["labels"]
    if not isinstance(labels, list):
        bad("labels", f"must be an array of {{\"value\", \"name\", \"rgb\"}} objects, got {_show(labels)}")
    else:
        seen = set()
        for i, e in enumerate(labels):
            f = f"labels[{i}]"
            if not isinstance(e, dict):
                bad(f, f"must be an object such as {{\"value\": 1, \"name\": \"liver\"}}, got {_show(e)}")
                continue
            for key in e:
                if key not in ("value", "name", "rgb"):
                    bad(f"{f}.{key}", "unknown field (known: value, name, rgb)")
            v = e.get("value")
            if not _is_integer(v):
                bad(f + ".value", "missing (the label's value in the label map)" if v is None else
                    f"must be an integer, got {_show(v)}")
            elif classes_ok and not 0 <= v < p["num_classes"]:
                bad("labels", f"value {v} is not a class (0..{p['num_classes'] - 1})")
            elif v in seen:
                bad("labels", f"value {v} is listed twice")
            else:
                seen.add(v)
            if "name" in e and not isinstance(e["name"], str):
                bad(f + ".name", f"must be a string, got {_show(e['name'])}")
            if "rgb" in e and not (isinstance(e["rgb"], list) and len(e["rgb"]) == 3 and
                                   all(_is_integer(x) and 0 <= x <= 255 for x in e["rgb"])):
                bad(f + ".rgb", f"must be 3 integers in [0, 255], got {_show(e['rgb'])}")

    if config:
        if patch_ok and list(p["patch"]) != list(config["patch"]):
            problems.append(f"plan.patch {_show(p['patch'])} but the network's is {_show(config['patch'])}")
        if classes_ok and p["num_classes"] != config["num_classes"]:
            problems.append(f"plan.num_classes {p['num_classes']} but the network's is {config['num_classes']}")
        if channels_ok and len(norm) != config["in_channels"]:
            problems.append(f"plan.normalization has {len(norm)} entries (one per input channel) but the network "
                            f"takes {config['in_channels']} channel(s)")
    return problems


# What an nnU-Net v1 plans.pkl references (numpy arrays and scalars, their
# dtypes, OrderedDict), under numpy 1's and numpy 2's module names.
PLANS_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "set"), ("builtins", "frozenset"),
    ("_codecs", "encode"),  # how protocol 2 stores an array's bytes
}


class _PlansUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in PLANS_GLOBALS:
            raise pickle.UnpicklingError(
                f"plans file references {module}.{name}, which an nnU-Net v1 plans file does not need; "
                "refusing to load it")
        if module.startswith("numpy."):
            import numpy
            # numpy 2 pickles name numpy._core, numpy 1 only has numpy.core.
            if not hasattr(numpy, "_core"):
                module = module.replace("numpy._core", "numpy.core")
        return super().find_class(module, name)


def load_nnunet_plans(path):
    try:
        with open(path, "rb") as f:
            plans = _PlansUnpickler(f, encoding="latin1").load()
    except Exception as e:  # a bad file raises many types
        raise SystemExit(f"convert_checkpoint: cannot read the plans file '{path}': {e}")
    if not isinstance(plans, dict):
        raise SystemExit(f"convert_checkpoint: '{path}' is not an nnU-Net v1 plans file (no dict)")
    return plans


# Display colours for converted label tables: the BTCV table's hues
# (preprocessing/plan.cc), then golden-angle hues.
LABEL_COLOURS = [[157, 108, 162], [241, 196, 15], [52, 152, 219], [0, 128, 0], [255, 160, 122], [196, 98, 50],
                 [46, 204, 113], [220, 30, 50], [0, 0, 180], [0, 200, 200], [255, 128, 255], [128, 128, 0],
                 [180, 255, 120]]


def _label_colour(value):
    if value == 0:
        return [0, 0, 0]
    if value <= len(LABEL_COLOURS):
        return LABEL_COLOURS[value - 1]
    import colorsys
    r, g, b = colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.7, 0.9)
    return [round(r * 255), round(g * 255), round(b * 255)]


def _label_names(path):
    """value -> name from a dataset.json: nnU-Net v1 ({"0": "background"}) or v2 ({"background": 0})."""
    try:
        with open(path) as f:
            labels = json.load(f)["labels"]
        if all(str(k).isdigit() for k in labels):
            return {int(k): str(v) for k, v in labels.items()}
        return {int(v): str(k) for k, v in labels.items()}
    except Exception as e:  # noqa: BLE001 - any malformed file
        raise SystemExit(f"convert_checkpoint: --labels '{path}': no usable \"labels\" table ({e})")


def _get(d, key, where):
    if isinstance(d, dict):
        for k in (key, str(key)):
            if k in d:
                return d[k]
    raise SystemExit(f"convert_checkpoint: the plans file has no {where}[{key!r}]")


def plan_from_nnunet(plans, stage=None, names=None, patch=None):
    """Our plan from an nnU-Net v1 plans dict. `patch` (the network's) overrides the stage's patch_size.

    Returns (plan, notes): notes say what the plans file could not express exactly.
    """
    notes = []
    stages = _get(plans, "plans_per_stage", "plans")
    keys = sorted(int(k) for k in stages)
    if stage is None:
        stage = keys[-1]  # nnU-Net v1's 3d_fullres runs the last (full-resolution) stage
    elif stage not in keys:
        raise SystemExit(f"convert_checkpoint: --plan-stage {stage}: the plans file has stages {keys}")
    sp = _get(stages, stage, "plans['plans_per_stage']")
    # current_spacing and patch_size are already in the transposed (network) axis order.
    spacing = [float(x) for x in _get(sp, "current_spacing", f"plans_per_stage[{stage}]")]
    plan_patch = [int(x) for x in _get(sp, "patch_size", f"plans_per_stage[{stage}]")]
    transpose = [int(x) for x in plans.get("transpose_forward", [0, 1, 2])]
    schemes = _get(plans, "normalization_schemes", "plans")
    channels = int(plans.get("num_modalities", len(schemes)))
    masks = plans.get("use_mask_for_norm") or {}
    props = (plans.get("dataset_properties") or {}).get("intensityproperties") or {}
    normalization = []
    for c in range(channels):
        scheme = _get(schemes, c, "plans['normalization_schemes']")
        mask = bool(masks.get(c, masks.get(str(c), False)))
        if scheme == "CT":
            ip = _get(props, c, "plans['dataset_properties']['intensityproperties']")
            normalization.append({"scheme": "ct",
                                  "clip_low": float(_get(ip, "percentile_00_5", f"intensityproperties[{c}]")),
                                  "clip_high": float(_get(ip, "percentile_99_5", f"intensityproperties[{c}]")),
                                  "mean": float(_get(ip, "mean", f"intensityproperties[{c}]")),
                                  "std": float(_get(ip, "sd", f"intensityproperties[{c}]"))})
            if mask:
                notes.append(f"channel {c}: CT normalisation with use_mask_for_norm (zero outside the non-zero "
                             "mask) has no equivalent here; normalised without the mask")
        elif scheme == "CT2":
            raise SystemExit(f"convert_checkpoint: channel {c} uses nnU-Net's CT2 normalisation (clip, then each "
                             "image's own mean and std), which unetrpp-serve does not implement")
        elif scheme == "noNorm":
            normalization.append({"scheme": "none"})
        else:  # nnU-Net v1: every other scheme ("nonCT", "MRI", ...) is the per-image z-score
            normalization.append({"scheme": "zscore", "use_nonzero_mask": mask})
    num_classes = int(_get(plans, "num_classes", "plans")) + 1  # nnU-Net v1 counts without background
    all_classes = plans.get("all_classes")
    if all_classes is None:
        all_classes = (plans.get("dataset_properties") or {}).get("all_classes")
    values = sorted({0, *(int(v) for v in all_classes)}) if all_classes is not None else list(range(num_classes))
    names = names or {}
    labels = [{"value": v, "name": names.get(v, "background" if v == 0 else f"label {v}"), "rgb": _label_colour(v)}
              for v in values]
    if patch is not None and list(patch) != plan_patch:
        notes.append(f"the plans' patch_size {plan_patch} is not the network's {list(patch)} (UNETR++'s trainers "
                     "set their own crop size): using the network's")
    plan = collections.OrderedDict([
        ("target_spacing", spacing), ("transpose", transpose), ("normalization", normalization),
        ("crop", "body" if normalization[0]["scheme"] == "ct" else "nonzero"),
        ("patch", list(patch) if patch is not None else plan_patch), ("step", 0.5),
        ("min_step", 0.25), ("gaussian_sigma_scale", 0.125), ("mirror_axes", []), ("anisotropy_threshold", 3.0),
        ("num_classes", num_classes), ("labels", labels)])
    return plan, notes


def load_plan(path, config=None, stage=None, labels_path=None, patch=None):
    """A plan from our JSON or an nnU-Net v1 plans.pkl, checked (against `config` when given)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1)
    except OSError as e:
        raise SystemExit(f"convert_checkpoint: --plan '{path}': {e.strerror}")
    if head == b"\x80":  # a pickle (protocol 2 or later)
        names = _label_names(labels_path) if labels_path else None
        network_patch = config["patch"] if config else patch
        plan, notes = plan_from_nnunet(load_nnunet_plans(path), stage, names, network_patch)
        notes.append("mirror_axes left empty: nnU-Net mirrors every window along (0, 1, 2) at test time, "
                     "8 network passes; add them to the plan for its exact procedure")
        for n in notes:
            print(f"convert_checkpoint: plan: {n}")
    else:
        if labels_path or stage is not None:
            raise SystemExit("convert_checkpoint: --labels and --plan-stage apply to an nnU-Net plans.pkl only")
        try:
            with open(path) as f:
                plan = json.load(f, object_pairs_hook=collections.OrderedDict)
        except ValueError as e:
            raise SystemExit(f"convert_checkpoint: --plan '{path}' is neither JSON nor a pickle: {e}")
    problems = plan_problems(plan, config)
    if config is None and patch is not None and isinstance(plan, dict):
        got = plan.get("patch", PLAN_DEFAULTS["patch"])
        if isinstance(got, list) and got != list(patch):
            problems.append(f"plan.patch {_show(got)} but the network's is {_show(list(patch))}")
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise SystemExit(f"convert_checkpoint: {len(problems)} problem(s) in the plan '{path}':\n{listing}")
    return plan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="reference training checkpoint (model_final_checkpoint.model)")
    ap.add_argument("output", nargs="?", help="safetensors file to write")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="published architecture; default: the one the weights match")
    ap.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"))
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32",
                    help="storage dtype of floating tensors (read back into float32)")
    ap.add_argument("--drop-deep-supervision", action="store_true",
                    help="leave out the out2/out3 training heads")
    ap.add_argument("--plan", metavar="FILE",
                    help="plan to embed as \"unetrpp_plan\": our plan JSON or an nnU-Net v1 plans.pkl")
    ap.add_argument("--plan-stage", type=int, metavar="N",
                    help="plans.pkl stage (default: the last, nnU-Net v1's 3d_fullres)")
    ap.add_argument("--labels", metavar="DATASET_JSON",
                    help="label names for a plans.pkl from the dataset's dataset.json (\"labels\")")
    ap.add_argument("--plan-out", metavar="FILE", help="also write the (converted) plan as JSON, for --plan of "
                    "the server; with --plan alone, no checkpoint is needed")
    args = ap.parse_args(argv)

    if args.checkpoint and not args.output:
        ap.error("give the output file after the checkpoint")
    if not args.checkpoint and not (args.plan and args.plan_out):
        ap.error("give CHECKPOINT OUTPUT, or --plan FILE --plan-out FILE to convert a plan alone")
    if not args.plan and (args.plan_out or args.labels or args.plan_stage is not None):
        ap.error("--plan-out, --labels and --plan-stage need --plan")

    config = None
    if args.checkpoint:
        sd = load_state_dict(args.checkpoint)
        config = infer_config(sd, args.preset, args.patch)
    patch = args.patch or (PRESETS[args.preset]["patch"] if args.preset else None)
    plan = load_plan(args.plan, config, args.plan_stage, args.labels, patch) if args.plan else None
    if args.plan_out:
        with open(args.plan_out, "w") as f:
            json.dump(plan, f, indent=2)
            f.write("\n")
        print(f"wrote {args.plan_out}: plan with patch {plan.get('patch')}, "
              f"{len(plan.get('normalization') or [1])} channel(s), {plan.get('num_classes')} classes")
    if not args.checkpoint:
        return 0

    target = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    tensors = collections.OrderedDict()
    for name, t in sd.items():
        if args.drop_deep_supervision and name.split(".")[0] in ("out2", "out3"):
            continue
        tensors[name] = t.to(target) if t.is_floating_point() else t
    metadata = {
        "unetrpp_config": json.dumps(config),
        "converted_from": "reference UNETR++ checkpoint",
    }
    if plan is not None:
        metadata["unetrpp_plan"] = json.dumps(plan, separators=(",", ":"))
    write_safetensors(args.output, tensors, metadata)
    print(f"wrote {args.output}: {len(tensors)} tensors, config {json.dumps(config)}"
          + (", with its plan" if plan is not None else ""))
    if plan is None:
        print("convert_checkpoint: warning: no --plan, so the weights carry no plan and the server will use "
              "generic CT settings (spacing, intensity statistics, label names) for them; give --plan plans.pkl "
              "(nnU-Net v1) or --plan plan.json (docs/preprocessing.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
