#!/usr/bin/env python3
"""Sums the time of one UNETR++ forward pass per kind of work.

Two sources:

    ONEDNN_VERBOSE=1 build/tools/upp-bench-model --threads 2 --runs 2 --warmup 1 > /tmp/v.txt
    python3 tools/profile_model.py --onednn /tmp/v.txt --passes 3

sums oneDNN's own execution times (convolutions, matmuls, softmax, the
normalisation step of instance norm, reorders) of the last of `passes`
forward passes, per primitive and per convolution shape: no profiler
overhead, and the last pass shows the steady state (the first two also pay
for fresh memory). What runs outside oneDNN (instance-norm statistics,
elementwise ATen operators) is the window's time less this sum.

    build/tools/upp-bench-model --threads 2 --runs 3 --profile /tmp/trace.json
    python3 tools/profile_model.py /tmp/trace.json

Reads the Chrome trace that `upp-bench-model --profile` writes (LibTorch's
RecordProfile), computes each event's self time (its duration less that of
the events nested in it on the same thread), and prints, as Markdown: the
self time per kind of work (convolutions, transposed convolutions,
normalisation, attention arithmetic, copies and reorders, elementwise, other),
the EPA attention blocks' inclusive time, and the operators with the most
self time. Standard library only.
"""
import collections
import json
import re
import sys

# First match wins; names are LibTorch's aten:: operators and the model's own
# RECORD_FUNCTION scopes (upp::...).
KINDS = [
    ("transposed convolutions", re.compile(r"conv_transpose|convolution_backward|deconv")),
    ("convolutions", re.compile(r"conv|upp::onednn_conv3d")),
    # F::normalize of the queries and keys runs linalg_vector_norm: attention.
    ("attention arithmetic (matmul, softmax, normalize)",
     re.compile(r"matmul|bmm|^aten::mm$|addmm|linear|softmax|normalize|vector_norm|upp::onednn_(matmul|softmax)")),
    ("normalisation (instance/group/batch norm)", re.compile(r"norm|upp::onednn_instance_norm")),
    ("copies and reorders", re.compile(r"copy|contiguous|clone|_to_copy|^aten::to$|reorder|^aten::cat$|empty|resize")),
    ("elementwise", re.compile(r"add|mul|sub|div|gelu|relu|sigmoid|tanh|exp|sqrt|pow|clamp|neg|where|fill")),
]


def load_events(path):
    with open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    complete, open_by_key = [], {}
    for e in events:
        ph = e.get("ph")
        if ph == "X":
            complete.append((e["name"], e.get("tid", 0), float(e["ts"]), float(e.get("dur", 0))))
        elif ph == "B":
            open_by_key.setdefault((e["name"], e.get("tid", 0)), []).append(float(e["ts"]))
        elif ph == "E":
            stack = open_by_key.get((e["name"], e.get("tid", 0)))
            if stack:
                start = stack.pop()
                complete.append((e["name"], e.get("tid", 0), start, float(e["ts"]) - start))
    return complete


def self_times(events):
    """Per event: (name, inclusive, self), nesting found per thread."""
    by_tid = collections.defaultdict(list)
    for name, tid, ts, dur in events:
        by_tid[tid].append([name, ts, dur, dur])  # name, start, duration, self
    out = []
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e[1], -e[2]))
        stack = []
        for e in evs:
            while stack and stack[-1][1] + stack[-1][2] <= e[1]:
                stack.pop()
            if stack:
                stack[-1][3] -= e[2]
            stack.append(e)
        out.extend((name, dur, max(self, 0.0)) for name, _, dur, self in evs)
    return out


def kind_of(name):
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind
    return "other"


def onednn_last_pass(path, passes):
    """(kind, shape, ms, implementation) of each oneDNN primitive execution in the last pass."""
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("onednn_verbose,exec,"):
                fields = line.strip().split(",")
                rows.append((fields[3], fields[-2], float(fields[-1]), fields[4]))
    return rows[len(rows) - pass_length(rows, passes):]


def pass_length(rows, passes):
    """Rows in one steady-state pass.

    The first pass runs more primitives than the later ones (weights are
    converted to the kernels' layouts once), so len(rows) // passes would cut
    the last "pass" from the middle of the one before it. The later passes are
    identical in kind and shape: the longest length whose last passes - 1
    blocks hold the same primitives, leaving at least as many rows for the first
    pass, is one pass. With fewer than three passes there is nothing to
    compare, and the passes are taken as equal.
    """
    if passes < 3:
        return len(rows) // passes
    kinds = [(row[0], row[1]) for row in rows]
    for length in range(len(rows) // passes, 0, -1):
        # Compared as multisets: primitives run from parallel loops (EPA's
        # heads) log in whichever order their threads finish.
        blocks = [collections.Counter(kinds[len(kinds) - (i + 1) * length:len(kinds) - i * length])
                  for i in range(passes - 1)]
        if all(block == blocks[0] for block in blocks[1:]):
            return length
    raise ValueError("no repeating pass found: were all passes logged?")


def print_onednn(path, passes):
    rows = onednn_last_pass(path, passes)
    total = sum(row[2] for row in rows)
    per_kind, calls, per_shape = collections.Counter(), collections.Counter(), collections.Counter()
    per_impl = collections.Counter()
    for kind, shape, ms, impl in rows:
        per_kind[kind] += ms
        calls[kind] += 1
        per_shape[(kind, shape)] += ms
        per_impl[(kind, impl)] += ms
    print(f"oneDNN primitives in the last of {passes} passes: {total:.1f} ms\n")
    print("| primitive | calls | ms | share |\n|---|---|---|---|")
    for kind, ms in per_kind.most_common():
        print(f"| {kind} | {calls[kind]} | {ms:.1f} | {100 * ms / total:.1f} % |")
    print("\n| primitive | shape | ms |\n|---|---|---|")
    for (kind, shape), ms in per_shape.most_common(8):
        print(f"| {kind} | `{shape}` | {ms:.1f} |")
    # The implementation names the instruction set the kernels use
    # (e.g. brg:avx512_core_amx, jit:avx2): which ISA the time went to.
    print("\n| primitive | implementation | ms | share |\n|---|---|---|---|")
    for (kind, impl), ms in per_impl.most_common(10):
        print(f"| {kind} | `{impl}` | {ms:.1f} | {100 * ms / total:.1f} % |")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--onednn" and sys.argv[3] == "--passes":
        return print_onednn(sys.argv[2], int(sys.argv[4]))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = self_times(load_events(sys.argv[1]))
    if not rows:
        sys.exit("no events in the trace")
    total = sum(s for _, _, s in rows)
    per_kind = collections.Counter()
    per_op = collections.Counter()
    calls = collections.Counter()
    for name, _, s in rows:
        per_kind[kind_of(name)] += s
        per_op[name] += s
        calls[name] += 1
    epa = sum(d for name, d, _ in rows if name == "upp::epa")
    print(f"Self time of all operators: {total / 1000:.1f} ms\n")
    print("| kind of work | ms | share |\n|---|---|---|")
    for kind, s in per_kind.most_common():
        print(f"| {kind} | {s / 1000:.1f} | {100 * s / total:.1f} % |")
    if epa:
        print(f"\nEPA attention blocks (inclusive, all their operators): {epa / 1000:.1f} ms, "
              f"{100 * epa / total:.1f} %\n")
    print("| operator | calls | self ms | share |\n|---|---|---|---|")
    for name, s in per_op.most_common(15):
        print(f"| `{name}` | {calls[name]} | {s / 1000:.1f} | {100 * s / total:.1f} % |")


if __name__ == "__main__":
    main()
