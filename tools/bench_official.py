#!/usr/bin/env python3
"""The published UNETR++ code, timed next to ours in the same run.

The official repository (Amshaker/unetr_plus_plus) needs MONAI, einops, timm
and batchgenerators, none of which Debian ships and none of which this project
may download. The benchmark therefore takes a folder that the operator laid out
by hand and never commits (see BENCHMARKS.md, "The published code"):

    OFFICIAL/monai/        MONAI 1.3.0's python package (pure python)
    OFFICIAL/einops/       einops' python package
    OFFICIAL/upp/unetr_pp/ the repository's unetr_pp package

timm and batchgenerators are stood in for below: the synapse network uses only
timm's trunc_normal_ (initialisation, which torch has under the same name) and
imports batchgenerators' pad_nd_image in a module it never calls at inference.

    bench_official.py --official DIR window [--threads 2] [--runs 3] [--rounds 3] [--bench-model BIN]
        one synapse window (1 x 1 x 64 x 128 x 128, fp32): the official network,
        tools/reference_unetrpp.py (our PyTorch restatement) and, with
        --bench-model, upp-bench-model, alternated ROUNDS times; the official
        weights are loaded into the restatement and the logits compared first.
    bench_official.py --official DIR sliding [--size 96 512 512] [--threads 2]
        MONAI's sliding_window_inference (0.5 overlap, Gaussian weighting, the
        official inference setting) with the official network over one volume
        tensor, timed once.
Prints one JSON object per measurement on stdout.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SYNAPSE_PATCH = (64, 128, 128)


def install_stand_ins():
    """Modules the official code imports but does not need at inference."""
    timm = types.ModuleType("timm")
    timm.models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    timm.models.layers = layers
    bg = types.ModuleType("batchgenerators")
    aug = types.ModuleType("batchgenerators.augmentations")
    utils = types.ModuleType("batchgenerators.augmentations.utils")

    def pad_nd_image(*args, **kwargs):
        raise NotImplementedError("batchgenerators is not laid out; only the network is benchmarked")

    utils.pad_nd_image = pad_nd_image
    for name, module in {"timm": timm, "timm.models": timm.models, "timm.models.layers": layers,
                         "batchgenerators": bg, "batchgenerators.augmentations": aug,
                         "batchgenerators.augmentations.utils": utils}.items():
        sys.modules.setdefault(name, module)


def official_network(folder):
    for sub in ("", "upp"):
        path = os.path.join(folder, sub)
        if not os.path.isdir(path):
            sys.exit(f"bench_official: {path} is missing (see the module docstring)")
        sys.path.insert(0, path)
    install_stand_ins()
    from unetr_pp.network_architecture.synapse.unetr_pp_synapse import UNETR_PP
    # The official synapse configuration (unetr_pp_trainer_synapse.py), inference without deep supervision.
    return UNETR_PP(in_channels=1, out_channels=14, img_size=list(SYNAPSE_PATCH), feature_size=16, num_heads=4,
                    depths=[3, 3, 3, 3], dims=[32, 64, 128, 256], do_ds=False).eval()


def our_port():
    sys.path.insert(0, HERE)
    import reference_unetrpp
    return reference_unetrpp.UNETRPP(reference_unetrpp.PRESETS["synapse"]).eval()


def time_once(net, x):
    t0 = time.perf_counter()
    net(x)
    return (time.perf_counter() - t0) * 1000


def compare(official, port, x):
    """Loads the official weights into the restatement; both must compute the same logits."""
    missing, unexpected = port.load_state_dict(official.state_dict(), strict=False)
    # Without deep supervision the official network has no out2/out3 heads; nothing else may differ.
    missing = [k for k in missing if not k.startswith(("out2.", "out3."))]
    if missing or unexpected:
        sys.exit(f"bench_official: state dicts differ: {missing[:5]} {unexpected[:5]}")
    a, b = official(x), port(x)
    return {"max_abs_logit_diff": (a - b).abs().max().item(), "max_abs_logit": a.abs().max().item(),
            "label_agreement": (a.argmax(1) == b.argmax(1)).double().mean().item()}


def bench_model_ms(binary, threads, runs):
    out = subprocess.run([binary, "--preset", "synapse", "--threads", str(threads), "--runs", str(runs)],
                         check=True, capture_output=True, text=True).stdout
    fields = dict(f.split("=", 1) for line in out.splitlines() for f in line.split() if "=" in f)
    return float(fields["median_ms_per_window"])


def window(args):
    torch.manual_seed(0)
    official, port = official_network(args.official), our_port()
    x = torch.randn(1, 1, *SYNAPSE_PATCH)
    times = {"official": [], "reference_unetrpp.py": [], "upp-bench-model": []}
    with torch.inference_mode():
        print(json.dumps({"check": compare(official, port, x)}), flush=True)
        for net in (official, port):  # warm-up: first calls allocate and pick kernels
            time_once(net, x)
        for r in range(args.rounds):
            times["official"] += [time_once(official, x) for _ in range(args.runs)]
            times["reference_unetrpp.py"] += [time_once(port, x) for _ in range(args.runs)]
            if args.bench_model:
                times["upp-bench-model"].append(bench_model_ms(args.bench_model, args.threads, args.runs))
            print(json.dumps({"round": r + 1, **{k: round(v[-1], 1) for k, v in times.items() if v}}), flush=True)
    print(json.dumps({"median_ms_per_window": {k: round(statistics.median(v), 1) for k, v in times.items() if v},
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


def sliding(args):
    torch.manual_seed(0)
    net = official_network(args.official)  # puts the laid-out packages on the path first
    from monai.inferers import sliding_window_inference
    volume = torch.randn(1, 1, *args.size)
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits = sliding_window_inference(volume, SYNAPSE_PATCH, 1, net, overlap=0.5, mode="gaussian")
        labels = logits.argmax(1)
        seconds = time.perf_counter() - t0
    print(json.dumps({"official_monai_sliding_window_s": round(seconds, 1), "size": args.size,
                      "labels_shape": list(labels.shape), "threads": torch.get_num_threads()}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, help="the laid-out folder (module docstring)")
    ap.add_argument("--threads", type=int, default=2)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("window")
    w.add_argument("--runs", type=int, default=3, help="timed passes per network per round")
    w.add_argument("--rounds", type=int, default=3)
    w.add_argument("--bench-model", help="upp-bench-model binary, timed in each round too")
    s = sub.add_parser("sliding")
    s.add_argument("--size", type=int, nargs=3, default=[96, 512, 512], metavar=("D", "H", "W"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    window(args) if args.cmd == "window" else sliding(args)


if __name__ == "__main__":
    main()
