"""What a user of the official UNETR++ code brings: a checkpoint and a plans
file, in the formats its nnU-Net v1 trainer writes them, made here with
random weights (the network is tools/reference_unetrpp.py, the published
architecture restated with torch alone).

- save_checkpoint(path): `model_final_checkpoint.model` as the trainer's
  save_checkpoint writes it: torch.save of a dict with epoch, state_dict,
  optimizer_state_dict (SGD with Nesterov momentum), lr_scheduler_state_dict,
  plot_stuff and best_stuff (tuples holding numpy float64 scalars).
- save_plans(path): `plans.pkl` (nnU-Net v1's experiment planner: a pickled
  dict with numpy arrays, OrderedDicts and numpy scalars) for the Synapse
  task's 3d_fullres stage.
"""
import collections
import os
import pickle
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import reference_unetrpp  # noqa: E402

SYNAPSE_CLASSES = ["spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach",
                   "aorta", "inferior vena cava", "portal vein and splenic vein", "pancreas",
                   "right adrenal gland", "left adrenal gland"]


def save_checkpoint(path, preset="synapse", seed=0):
    torch.manual_seed(seed)
    net = reference_unetrpp.UNETRPP(reference_unetrpp.PRESETS[preset])
    state_dict = collections.OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items())
    params = [p for p in net.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    for p in params:  # one step's momentum buffers, as after training
        p.grad = torch.zeros_like(p)
    optimizer.step()
    losses = [np.float64(-0.5 - 0.001 * i) for i in range(3)]
    torch.save({
        "epoch": 1000,
        "state_dict": state_dict,
        "optimizer_state_dict": optimizer.state_dict(),
        "lr_scheduler_state_dict": None,
        "plot_stuff": (losses, losses, [], [np.float64(0.8)] * 3),
        "best_stuff": (997, np.float64(-0.52), np.float64(0.81)),
    }, path)


def save_plans(path):
    """nnU-Net v1 plans for Synapse (Task002), as its planner pickles them:
    the axis order is nnU-Net's (z, y, x), spacings in mm."""
    intensity = collections.OrderedDict([(0, collections.OrderedDict([
        ("median", np.float64(72.0)), ("mean", np.float64(77.56)), ("sd", np.float64(65.63)),
        ("mn", np.float64(-1024.0)), ("mx", np.float64(3071.0)),
        ("percentile_99_5", np.float64(304.0)), ("percentile_00_5", np.float64(-958.0))]))])
    stage = {
        "batch_size": 2, "num_pool_per_axis": [4, 5, 5],
        "patch_size": np.array([64, 128, 128]), "median_patient_size_in_voxels": np.array([148, 512, 512]),
        "current_spacing": np.array([3.0, 0.7578125, 0.7578125]),
        "original_spacing": np.array([3.0, 0.7578125, 0.7578125]), "do_dummy_2D_data_aug": False,
        "pool_op_kernel_sizes": [[1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "conv_kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    }
    plans = {
        "num_stages": 1, "num_modalities": 1, "modalities": {0: "CT"},
        "normalization_schemes": collections.OrderedDict([(0, "CT")]),
        "dataset_properties": {
            "all_classes": list(range(1, 14)),
            "modalities": {0: "CT"},
            "intensityproperties": intensity,
            "size_reductions": collections.OrderedDict(),
        },
        "list_of_npz_files": [], "original_spacings": [np.array([3.0, 0.76, 0.76])],
        "original_sizes": [np.array([148, 512, 512])], "preprocessed_data_folder": "/data/nnUNet_preprocessed",
        "num_classes": 13, "all_classes": list(range(1, 14)), "base_num_features": 32,
        "use_mask_for_norm": collections.OrderedDict([(0, False)]),
        "keep_only_largest_region": None, "min_region_size_per_class": None, "min_size_per_class": None,
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "data_identifier": "nnFormerData_plans_v2.1", "plans_per_stage": {0: stage},
        "preprocessor_name": "GenericPreprocessor", "conv_per_stage": 2,
    }
    with open(path, "wb") as f:
        pickle.dump(plans, f)
