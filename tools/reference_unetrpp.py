#!/usr/bin/env python3
"""UNETR++ in plain PyTorch, op for op as the published implementation computes
it, as the comparison baseline for upp-bench-model.

The published code needs MONAI, einops and timm, which Debian does not ship;
this file restates the same network (from shared/spec/unetrpp.md) with torch
alone, under the reference state-dict names, so it loads the reference fixtures
and the project's safetensors files. tests/tools checks that it reproduces the
reference fixture logits, so timing it times the reference computation.

    reference_unetrpp.py bench [--preset synapse] [--threads 2] [--runs 5] [--device cpu|cuda] [--bf16]
    reference_unetrpp.py check WEIGHTS.safetensors IO.safetensors
"""
import argparse
import json
import struct
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F

PRESETS = {
    "synapse": dict(in_channels=1, classes=14, patch=(64, 128, 128), stem=(2, 4, 4), kind="synapse"),
    "acdc": dict(in_channels=1, classes=4, patch=(16, 160, 160), stem=(1, 4, 4), kind="acdc"),
    "lung": dict(in_channels=1, classes=2, patch=(32, 192, 192), stem=(1, 4, 4), kind="lung"),
    "tumor": dict(in_channels=4, classes=4, patch=(128, 128, 128), stem=(4, 4, 4), kind="tumor"),
}


class Conv(nn.Module):  # MONAI Convolution: a module whose child is "conv"
    def __init__(self, cin, cout, k, s, bias=False, transposed=False):
        super().__init__()
        k, s = (k,) * 3 if isinstance(k, int) else k, (s,) * 3 if isinstance(s, int) else s
        pad = tuple((a - b + 1) // 2 for a, b in zip(k, s))
        cls = nn.ConvTranspose3d if transposed else nn.Conv3d
        self.conv = cls(cin, cout, k, s, padding=pad, bias=bias)

    def forward(self, x):
        return self.conv(x)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, norm):
        super().__init__()
        self.conv1, self.conv2 = Conv(cin, cout, 3, 1), Conv(cout, cout, 3, 1)
        mk = (lambda: nn.BatchNorm3d(cout)) if norm == "batch" else (lambda: nn.InstanceNorm3d(cout))
        self.norm1, self.norm2 = mk(), mk()
        if cin != cout:
            self.conv3, self.norm3 = Conv(cin, cout, 1, 1), mk()

    def forward(self, x):
        out = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        out = self.norm2(self.conv2(out))
        res = self.norm3(self.conv3(x)) if hasattr(self, "conv3") else x
        return F.leaky_relu(out + res, 0.01)


class EPA(nn.Module):
    def __init__(self, n, c, p, heads, kind):
        super().__init__()
        self.heads, self.kind = heads, kind
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.temperature2 = nn.Parameter(torch.ones(heads, 1, 1))
        if kind == "tumor":
            self.EF = nn.Parameter(torch.empty(n, p).uniform_(-p ** -0.5, p ** -0.5))
        self.qkvv = nn.Linear(c, 4 * c, bias=False)
        if kind == "synapse":
            self.E = self.F = nn.Linear(n, p)
        elif kind != "tumor":
            self.E, self.F = nn.Linear(n, p), nn.Linear(n, p)
        if kind != "tumor":
            self.out_proj, self.out_proj2 = nn.Linear(c, c // 2), nn.Linear(c, c // 2)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v_ca, v_sa = self.qkvv(x).reshape(b, n, 4, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v_ca, v_sa = (t.transpose(-2, -1) for t in (q, k, v_ca, v_sa))
        if self.kind == "tumor":
            k_p, v_p = k @ self.EF, v_sa @ self.EF
        else:
            k_p, v_p = self.E(k), self.F(v_sa)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        a_ca = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(-1)
        x_ca = (a_ca @ v_ca).permute(0, 3, 1, 2).reshape(b, n, c)
        a_sa = ((q.permute(0, 1, 3, 2) @ k_p) * self.temperature2).softmax(-1)
        x_sa = (a_sa @ v_p.transpose(-2, -1)).permute(0, 3, 1, 2).reshape(b, n, c)
        if self.kind == "tumor":
            return x_ca + x_sa
        return torch.cat((self.out_proj(x_sa), self.out_proj2(x_ca)), dim=-1)


class Block(nn.Module):
    def __init__(self, n, c, p, heads, kind):
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c))
        self.epa_block = EPA(n, c, p, heads, kind)
        self.conv51 = ResBlock(c, c, "batch")
        if kind in ("acdc", "lung"):
            self.conv52 = ResBlock(c, c, "batch")
        self.conv8 = nn.Sequential(nn.Dropout3d(0.1), nn.Conv3d(c, c, 1))
        self.pos_embed = nn.Parameter(torch.zeros(1, n, c))

    def forward(self, x):
        b, c, d, h, w = x.shape
        t = x.reshape(b, c, d * h * w).permute(0, 2, 1) + self.pos_embed
        attn = t + self.gamma * self.epa_block(self.norm(t))
        skip = attn.reshape(b, d, h, w, c).permute(0, 4, 1, 2, 3)
        y = self.conv51(skip)
        if hasattr(self, "conv52"):
            y = self.conv52(y)
        return skip + self.conv8(y)


class Encoder(nn.Module):
    def __init__(self, cfg, dims, tokens, depths, heads, proj):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        for i in range(4):
            cin = cfg["in_channels"] if i == 0 else dims[i - 1]
            k = cfg["stem"] if i == 0 else 2
            self.downsample_layers.append(nn.Sequential(Conv(cin, dims[i], k, k), nn.GroupNorm(cin, dims[i])))
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(tokens[i], dims[i], proj[i], heads, cfg["kind"]) for _ in range(depths[i])])
            for i in range(4))

    def forward(self, x):
        hidden = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            hidden.append(x)
        return hidden


class Up(nn.Module):
    def __init__(self, cin, cout, up, n, kind, heads, conv_decoder=False):
        super().__init__()
        self.transp_conv = Conv(cin, cout, up, up, transposed=True)
        blocks = [ResBlock(cout, cout, "instance")] if conv_decoder else \
            [nn.Sequential(*[Block(n, cout, 64, heads, kind) for _ in range(3)])]
        self.decoder_block = nn.ModuleList(blocks)

    def forward(self, x, skip):
        return self.decoder_block[0](self.transp_conv(x) + skip)


class Out(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.conv = Conv(cin, classes, 1, 1, bias=True)

    def forward(self, x):
        return self.conv(x)


class UNETRPP(nn.Module):
    def __init__(self, cfg, feature_size=16, depths=(3, 3, 3, 3), heads=4, patch=None):
        super().__init__()
        f, patch = feature_size, patch or cfg["patch"]
        grid = [p // s for p, s in zip(patch, cfg["stem"])]
        tokens = [grid[0] * grid[1] * grid[2] // 8 ** i for i in range(4)]
        dims = [2 * f, 4 * f, 8 * f, 16 * f]
        self.unetr_pp_encoder = Encoder(cfg, dims, tokens, depths, heads, [64, 64, 64, 32])
        self.encoder1 = ResBlock(cfg["in_channels"], f, "instance")
        self.decoder5 = Up(16 * f, 8 * f, 2, tokens[2], cfg["kind"], heads)
        self.decoder4 = Up(8 * f, 4 * f, 2, tokens[1], cfg["kind"], heads)
        self.decoder3 = Up(4 * f, 2 * f, 2, tokens[0], cfg["kind"], heads)
        self.decoder2 = Up(2 * f, f, cfg["stem"], 0, cfg["kind"], heads, conv_decoder=True)
        self.out1, self.out2, self.out3 = Out(f, cfg["classes"]), Out(2 * f, cfg["classes"]), Out(4 * f, cfg["classes"])

    def forward(self, x):
        h = self.unetr_pp_encoder(x)
        d3 = self.decoder5(h[3], h[2])
        d2 = self.decoder4(d3, h[1])
        d1 = self.decoder3(d2, h[0])
        return self.out1(self.decoder2(d1, self.encoder1(x)))


DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[8 + n + b:8 + n + e]), dtype=DT[info["dtype"]]).reshape(info["shape"])
    return out, meta


def check(weights, io):
    w, meta = read_safetensors(weights)
    cfg = PRESETS[meta["config"]]
    net = UNETRPP(cfg, int(meta["feature_size"]), json.loads(meta["depths"]), 4, json.loads(meta["patch"])).eval()
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in w.items()}, strict=True)
    t, _ = read_safetensors(io)
    with torch.inference_mode():
        logits = net(t["input"].float())
    err = (logits - t["logits"].float()).abs().max().item()
    agree = (logits.argmax(1).to(torch.uint8) == t["labels"]).double().mean().item()
    print(f"max |dlogit| {err:.3g}, label agreement {agree:.6f}")
    return err, agree


def bench(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = PRESETS[args.preset]
    dev = torch.device(args.device)
    net = UNETRPP(cfg).eval().to(dev)
    x = torch.randn(args.batch, cfg["in_channels"], *cfg["patch"], device=dev)
    times = []
    with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=args.bf16):
        for i in range(args.warmup + args.runs):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append((time.perf_counter() - t0) * 1000 / args.batch)
    times.sort()
    print(f"reference-pytorch preset={args.preset} device={args.device} bf16={args.bf16} "
          f"threads={torch.get_num_threads()} batch={args.batch} torch={torch.__version__} "
          f"median_ms_per_window={times[len(times) // 2]:.1f} min_ms={times[0]:.1f} max_ms={times[-1]:.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--preset", default="synapse", choices=sorted(PRESETS))
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--device", default="cpu")
    b.add_argument("--bf16", action="store_true", help="torch.autocast to bfloat16")
    c = sub.add_parser("check")
    c.add_argument("weights")
    c.add_argument("io")
    args = ap.parse_args(argv)
    if args.cmd == "bench":
        bench(args)
    else:
        err, agree = check(args.weights, args.io)
        return 0 if err < 1e-3 and agree >= 0.9999 else 1


if __name__ == "__main__":
    sys.exit(main())
