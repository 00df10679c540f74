"""The refinement stage (TrainConfig.refine): from its start on, the trainer's objective is the guidance's refine
loss, and the opacity penalty is scaled by its factor."""
import json
from pathlib import Path

import pytest
import torch

from dreamlmc.config import load_yaml
from dreamlmc.errors import DreamlmcError
from dreamlmc.trainer import Trainer, resolve_config

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def _trainer(tmp_path, *overrides):
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=8", "checkpoint_every=4",
                                              "renderer.orientation_weight=0", "renderer.eikonal_weight=0",
                                              "renderer.sparsity_weight=50", "renderer.sparsity_ramp=0",
                                              *overrides])
    tr = Trainer(cfg, tmp_path, progress=False)
    calls = []

    def refine(images, prompts, t_range, scale, ddim_steps):  # a zero loss: what is left is the penalty
        calls.append((tr.step, tuple(t_range), scale, ddim_steps))
        return {"loss": (images * 0).sum(), "loss_refine": torch.zeros(())}

    tr.guidance.refine = refine
    return tr, calls


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.0, 1.0])
def test_refinement_replaces_the_guidance_from_its_start_and_scales_the_penalty(tmp_path, factor):
    tr, calls = _trainer(tmp_path, "refine.start=0.5", "refine.t_range=[0.1,0.3]", "refine.guidance_scale=2",
                         "refine.ddim_steps=3", f"refine.sparsity_factor={factor}", "refine.sds_weight=0")
    assert tr.train()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [c[0] for c in calls] == [4, 5, 6, 7] and calls[0][1:] == ((0.1, 0.3), 2.0, 3)
    assert all("loss_cond" in r for r in recs[:4]) and not any("loss_cond" in r for r in recs[4:])
    refined = [r["loss"] for r in recs[4:]]
    assert all(v == 0.0 for v in refined) if factor == 0 else all(v > 0 for v in refined)


@pytest.mark.slow
def test_without_a_start_there_is_no_refinement(tmp_path):
    tr, calls = _trainer(tmp_path, "refine.start=null")
    assert tr.train() and calls == []


def test_refine_settings_are_checked():
    with pytest.raises(DreamlmcError, match="refine.start"):
        resolve_config([], ["refine.start=1.5"])
    with pytest.raises(DreamlmcError, match="refine.ddim_steps"):
        resolve_config([], ["refine.ddim_steps=0"])
    with pytest.raises(DreamlmcError, match="refine.sds_guidance_scale"):
        resolve_config([], ["refine.sds_guidance_scale=0.5"])


@pytest.mark.slow
def test_score_distillation_can_go_on_beside_the_refinement(tmp_path):
    tr, calls = _trainer(tmp_path, "refine.start=0.5", "refine.sds_weight=0.5")
    assert tr.train()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(calls) == 4 and all("loss_cond" in r and "loss_refine" in r for r in recs[4:])


@pytest.mark.slow
@pytest.mark.parametrize("sds_scale", [None, 4.0])
def test_the_refinements_score_distillation_runs_at_its_own_scale_when_set(tmp_path, sds_scale):
    """refine.sds_guidance_scale replaces the guidance's scheduled scale in the refinement's score distillation
    only: before the refinement the schedule holds, and unset it holds throughout."""
    extra = [f"refine.sds_guidance_scale={'null' if sds_scale is None else sds_scale}"]
    tr, calls = _trainer(tmp_path, "refine.start=0.5", "refine.sds_weight=0.5", "guidance.guidance_scale=20",
                         "guidance.guidance_scale_end_factor=0.5", *extra)
    scales, call = [], tr.guidance.__call__

    class Spy(type(tr.guidance)):
        def __call__(self, *a, **k):
            scales.append((tr.step, self.scale))
            return call(*a, **k)

    tr.guidance.__class__ = Spy
    assert tr.train()
    schedule = {step: 20 - 10 * step / 8 for step in range(8)}
    for step, s in scales:
        want = sds_scale if (sds_scale is not None and step >= 4) else schedule[step]
        assert s == pytest.approx(want), (step, s)
    assert [st for st, _ in scales] == list(range(8))


def test_the_refine_preset_is_the_default_with_row_122s_refinement_only():
    """configs/refine.yaml documents a measured setting (README ablation row 122): it must change nothing else."""
    import dataclasses
    preset = resolve_config([load_yaml(QUICK.parent / "refine.yaml")], [])
    default = resolve_config([], [])
    r = preset.refine
    assert (r.start, r.t_range, r.ddim_steps, r.sds_weight, r.sparsity_factor) == (0.7, (0.1, 0.3), 4, 0.0, 0.0)
    assert dataclasses.replace(preset, refine=default.refine) == default


def test_the_default_refines_its_last_30_percent_as_row_126_measured():
    """The built-in preset's refinement (README ablation rows 126, 130); the SD and IF presets leave it off."""
    r = resolve_config([], []).refine
    assert (r.start, r.t_range, r.ddim_steps, r.guidance_scale, r.sds_weight, r.sparsity_factor, r.volume_anchor,
            r.sds_guidance_scale) == (0.7, (0.05, 0.2), 2, 3.0, 0.25, 0.25, 0.0, 7.5)
    for name in ("stable_diffusion.yaml", "deepfloyd_if.yaml"):
        assert resolve_config([load_yaml(QUICK.parent / name)], []).refine.start is None, name


@pytest.mark.slow
def test_the_volume_anchor_holds_the_volume_the_refinement_starts_with(tmp_path):
    """With the refinement's own loss zeroed and the opacity penalty on, the penalty shrinks the field; the anchor
    (V / V0 - 1)^2 holds V near V0, measured at the first refinement step and restored from the checkpoint."""
    from dreamlmc.trainer import ANCHOR_POINTS

    def final_volume(sub, *extra):
        tr, _ = _trainer(tmp_path / sub, "steps=12", "refine.start=0.33", "refine.sparsity_factor=1",
                         "renderer.sparsity_weight=2000", *extra)
        assert tr.train()
        with torch.no_grad():
            v = float(tr.renderer.volume_occupancy(torch.Generator().manual_seed(0), points=ANCHOR_POINTS))
        recs = [json.loads(line) for line in (tmp_path / sub / "metrics.jsonl").read_text().splitlines()]
        return tr, v, recs

    free, v_free, recs_free = final_volume("free")
    held, v_held, recs = final_volume("held", "refine.volume_anchor=1e5")
    assert free.refine_volume is None and not any("volume_anchor" in r for r in recs_free)
    assert "volume_anchor" not in recs[3] and all("volume_anchor" in r for r in recs[4:])
    v0 = held.refine_volume
    assert abs(v_held / v0 - 1) < 0.5 * abs(v_free / v0 - 1), (v0, v_held, v_free)
    resumed = Trainer(held.cfg, tmp_path / "held", progress=False)
    resumed.load_checkpoint()
    assert resumed.refine_volume == v0


def test_the_anchor_points_draw_nothing_from_the_runs_generator(tmp_path):
    tr, _ = _trainer(tmp_path, "refine.start=0", "refine.volume_anchor=1")
    before = tr.generator.get_state().clone()
    tr._volume_anchor()
    assert torch.equal(tr.generator.get_state(), before) and tr.refine_volume is not None
