#!/usr/bin/env python3
"""Sums a LibTorch profiler trace of one UNETR++ forward pass per operator.

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


def main():
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
