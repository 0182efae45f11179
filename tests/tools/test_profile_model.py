"""tools/profile_model.py: self times from nested trace events, and kinds."""
import importlib.util
import json
import contextlib
import io
import os
import tempfile
import unittest

SPEC = importlib.util.spec_from_file_location(
    "profile_model", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "profile_model.py"))
profile_model = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(profile_model)


def event(name, ts, dur, tid=1):
    return {"name": name, "ph": "X", "ts": ts, "dur": dur, "tid": tid, "pid": "CPU Functions", "args": {}}


class ProfileModelTest(unittest.TestCase):
    def test_self_time_subtracts_nested_events_per_thread(self):
        events = [
            event("upp::epa", 0, 100),            # holds a matmul and a softmax
            event("upp::onednn_matmul", 10, 30),
            event("upp::onednn_softmax", 50, 20),
            event("aten::copy_", 120, 5),          # after the block
            event("upp::onednn_conv3d", 0, 60, tid=2),  # another thread, overlapping in time
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(events, f)
        try:
            rows = profile_model.self_times(profile_model.load_events(f.name))
        finally:
            os.unlink(f.name)
        self_by_name = {name: s for name, _, s in rows}
        self.assertEqual(self_by_name["upp::epa"], 50)
        self.assertEqual(self_by_name["upp::onednn_matmul"], 30)
        self.assertEqual(self_by_name["aten::copy_"], 5)
        self.assertEqual(self_by_name["upp::onednn_conv3d"], 60)

    def test_kinds(self):
        kind = profile_model.kind_of
        self.assertEqual(kind("upp::onednn_conv3d"), "convolutions")
        self.assertEqual(kind("aten::slow_conv_transpose3d"), "transposed convolutions")
        self.assertEqual(kind("upp::onednn_instance_norm"), "normalisation (instance/group/batch norm)")
        self.assertTrue(kind("aten::linalg_vector_norm").startswith("attention"))
        self.assertTrue(kind("upp::onednn_softmax").startswith("attention"))
        self.assertEqual(kind("aten::copy_"), "copies and reorders")
        self.assertEqual(kind("aten::leaky_relu_"), "elementwise")

    def test_onednn_verbose_takes_the_last_pass(self):
        lines = []
        for ms in (100.0, 5.0):  # a slow first pass, a fast second one
            lines.append(f"onednn_verbose,exec,cpu,convolution,jit:avx2,fwd,src,,alg,mb1_ic16oc16,{ms}")
            lines.append(f"onednn_verbose,exec,cpu,matmul,brg:avx512_core_amx,undef,src,,,32x8:8x64,{ms / 5}")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("onednn_verbose,info,cpu,runtime:OpenMP\n" + "\n".join(lines) + "\nmedian_ms=1\n")
        try:
            rows = profile_model.onednn_last_pass(f.name, 2)
        finally:
            os.unlink(f.name)
        self.assertEqual(rows, [("convolution", "mb1_ic16oc16", 5.0, "jit:avx2"),
                                ("matmul", "32x8:8x64", 1.0, "brg:avx512_core_amx")])

    def test_onednn_verbose_finds_the_last_pass_when_the_first_runs_more(self):
        # The first pass also converts weights (extra reorders): an even split
        # of the rows would start the "last pass" inside the second one.
        def one_pass(ms, first):
            # In the first pass each layer's weights are reordered just
            # before the layer's first run.
            reorder = [f"onednn_verbose,exec,cpu,reorder,jit:uni,undef,src,,,16x16,{ms}"] if first else []
            return (reorder + [f"onednn_verbose,exec,cpu,convolution,jit:avx2,fwd,src,,alg,mb1_ic16oc16,{ms}"] +
                    reorder + [f"onednn_verbose,exec,cpu,matmul,gemm:jit,undef,src,,,8x8:8x8,{ms}"] +
                    reorder + [f"onednn_verbose,exec,cpu,matmul,gemm:jit,undef,src,,,8x8:8x8,{ms}"])
        lines = one_pass(100.0, True) + one_pass(10.0, False) + one_pass(1.0, False)
        # Threads of a parallel loop log in any order: the last pass's
        # convolution after its matmuls.
        lines[-3:] = lines[-2:] + lines[-3:-2]
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        try:
            rows = profile_model.onednn_last_pass(f.name, 3)
        finally:
            os.unlink(f.name)
        self.assertEqual(sorted(rows), [("convolution", "mb1_ic16oc16", 1.0, "jit:avx2"),
                                        ("matmul", "8x8:8x8", 1.0, "gemm:jit"),
                                        ("matmul", "8x8:8x8", 1.0, "gemm:jit")])

    def test_onednn_report_names_the_implementations(self):
        lines = [f"onednn_verbose,exec,cpu,convolution,brg:avx512_core_amx,fwd,src,,alg,mb1_ic16oc16,{ms}"
                 for ms in (30.0, 3.0)]
        lines += [f"onednn_verbose,exec,cpu,reorder,jit:uni,undef,src,,,8x8,{ms}" for ms in (10.0, 1.0)]
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                profile_model.print_onednn(f.name, 2)
        finally:
            os.unlink(f.name)
        text = out.getvalue()
        self.assertIn("last of 2 passes: 4.0 ms", text)
        self.assertIn("| convolution | `brg:avx512_core_amx` | 3.0 | 75.0 % |", text)
        self.assertIn("| reorder | `jit:uni` | 1.0 | 25.0 % |", text)


if __name__ == "__main__":
    unittest.main()
