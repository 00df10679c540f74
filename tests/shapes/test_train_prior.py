"""tools/train_prior.py fine-tunes from a shipped prior file and records what it started from and what it saw."""
import json

import numpy as np
import torch

from dreamlmc.shapes.data import make_dataset
from dreamlmc.shapes.prior import PriorNet, load_prior, save_prior
from tools import train_prior


def test_fine_tune_starts_from_the_shipped_weights_at_their_step_and_records_it(tmp_path):
    torch.manual_seed(3)
    start = PriorNet()
    weights = tmp_path / "prior.safetensors"
    save_prior(start, weights, {"steps": 7, "final_loss": 0.5}, dtype=torch.float32)
    data = tmp_path / "data.npz"
    np.savez(data, **make_dataset(1, 32, seed=0, progress=False, white_fraction=0.5))
    work = tmp_path / "work"
    args = ["--data", str(data), "--workdir", str(work), "--threads", "1", "--batch-size", "2",
            "--grid-every", "1000000"]
    assert train_prior.main(args + ["--init-weights", str(weights), "--max-steps", "9", "--lr", "1e-3",
                                    "--warmup", "1"]) == 0
    out = tmp_path / "tuned.safetensors"
    assert train_prior.main(args + ["--export", str(out)]) == 0  # resumes the checkpoint, then exports
    tuned, card = load_prior(out)
    assert card["steps"] == 9  # 7 shipped + 2 fine-tuning steps
    assert card["fine_tuned_from"]["steps"] == 7 and card["fine_tuned_from"]["weights"] == str(weights)
    assert card["data"]["white_fraction"] == 0.5 and card["data"]["images"] == 48
    assert card["training_command"] == ("python tools/make_shapes_data.py --white-fraction 0.5 --out DATA && "
                                        f"python tools/train_prior.py --init-weights {weights} --data DATA "
                                        "--lr 0.001 --warmup 1")
    # the EMA moved away from the start, but only a little after two steps (it started at the shipped weights)
    a, b = start.state_dict(), tuned.state_dict()
    diffs = [float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point()]
    assert 0 < max(diffs) < 0.05, max(diffs)


def test_a_fine_tune_on_one_camera_records_the_data_command_that_remakes_it(tmp_path):
    from dreamlmc.cameras import CameraConfig

    start = PriorNet()
    weights = tmp_path / "prior.safetensors"
    save_prior(start, weights, {"steps": 7, "final_loss": 0.5}, dtype=torch.float32)
    data = tmp_path / "data.npz"
    cam = CameraConfig(radius_range=(2.3, 2.3), fovy_range=(52.5, 52.5))
    np.savez(data, **make_dataset(1, 32, seed=0, progress=False, camera=cam))
    work = tmp_path / "work"
    args = ["--data", str(data), "--workdir", str(work), "--threads", "1", "--batch-size", "2",
            "--grid-every", "1000000"]
    assert train_prior.main(args + ["--init-weights", str(weights), "--max-steps", "8", "--lr", "2e-4",
                                    "--warmup", "1", "--precision", "fp32"]) == 0
    out = tmp_path / "tuned.safetensors"
    assert train_prior.main(args + ["--export", str(out)]) == 0
    _, card = load_prior(out)
    assert card["data"]["radius_range"] == [2.3, 2.3] and card["data"]["fovy_range"] == [52.5, 52.5]
    assert card["training_command"] == ("python tools/make_shapes_data.py --radius 2.3 --fovy 52.5 --out DATA && "
                                        f"python tools/train_prior.py --init-weights {weights} --data DATA "
                                        "--lr 0.0002 --warmup 1 --precision fp32")
