"""A run whose object vanishes goes back to its last checkpoint with half the opacity penalty."""
import json
import re
from pathlib import Path

import pytest
import torch

from dreamlmc.checkpoint import CHECKPOINT, load_state
from dreamlmc.config import load_yaml
from dreamlmc.trainer import Trainer, resolve_config

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def _train(tmp_path, patience):
    tmp_path.mkdir(parents=True, exist_ok=True)
    # an opacity penalty this strong empties the field within a dozen steps
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=24", "checkpoint_every=10",
                                              "renderer.sparsity_weight=1e5", "renderer.sparsity_ramp=0",
                                              f"empty_patience={patience}"])
    logs = []
    tr = Trainer(cfg, tmp_path, progress=False, log=logs.append)
    assert tr.train()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return tr, logs, recs


@pytest.mark.slow
def test_a_vanished_object_goes_back_with_half_the_penalty(tmp_path):
    tr, logs, recs = _train(tmp_path, patience=5)
    assert logs and "vanished" in logs[0] and "x0.5" in logs[0], logs
    assert tr.sparsity_scale < 1.0
    assert float(load_state(tmp_path / CHECKPOINT)["sparsity_scale"]) == tr.sparsity_scale  # resumable
    assert [r["step"] for r in recs] == list(range(1, 25))  # the abandoned steps are gone from the metrics


@pytest.mark.slow
def test_run_json_records_how_often_the_run_went_back(tmp_path):
    from dreamlmc.runs import _run_info

    tr, logs, _ = _train(tmp_path, patience=5)
    info = _run_info(tr, 1.0)
    assert info["went_back"] == len(logs) >= 1 and info["opacity_penalty_scale"] == 0.5 ** len(logs), (info, logs)
    tr, logs, _ = _train(tmp_path / "never", patience=0)
    assert _run_info(tr, 1.0)["went_back"] == 0


@pytest.mark.slow
def test_patience_zero_never_goes_back(tmp_path):
    tr, logs, recs = _train(tmp_path, patience=0)
    assert logs == [] and tr.sparsity_scale == 1.0
    assert recs[-1]["opacity"] < 1e-3  # it did vanish


@pytest.mark.slow
def test_going_back_draws_new_cameras_t_and_eps(tmp_path):
    """Replaying the same draws could vanish the same way: after going back the run draws anew (reproducibly)."""
    _, _, replay = _train(tmp_path / "a", patience=0)
    _, logs, recs = _train(tmp_path / "b", patience=5)
    back = int(re.search(r"back to step (\d+)", logs[0]).group(1))
    t_replay, t_new = [r["t"] for r in replay], [r["t"] for r in recs]
    assert t_new[:back] == t_replay[:back]  # the same run up to the checkpoint it went back to
    assert t_new[back:back + 5] != t_replay[back:back + 5]  # then new draws
    _, logs2, recs2 = _train(tmp_path / "c", patience=5)
    assert [r["t"] for r in recs2] == t_new  # reproducible


def test_learning_rates_decay_with_the_step_and_resume_at_the_same_rate(tmp_path):
    def trainer(steps_done):
        cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=8", "checkpoint_every=4",
                                                  "lr_decay=0.1"])
        tr = Trainer(cfg, tmp_path, progress=False)
        if steps_done:
            tr.load_checkpoint()
        return tr

    tr = trainer(0)
    recs = [tr.train_step() for _ in range(4)]
    lr0 = tr.cfg.lr
    assert [r["lr"] for r in recs] == pytest.approx([lr0 * 0.1 ** (i / 8) for i in range(4)])
    tr.save_checkpoint()
    resumed = trainer(4)
    assert resumed.train_step()["lr"] == pytest.approx(lr0 * 0.1 ** 0.5)


@pytest.mark.parametrize("weight", [0.0, 10.0])
def test_the_opacity_entropy_term_is_logged_only_when_weighted(tmp_path, weight):
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=2", f"renderer.entropy_weight={weight}"])
    rec = Trainer(cfg, tmp_path, progress=False).train_step()
    assert (rec["entropy"] > 0) == (weight > 0)  # the initial sphere has half-transparent edge pixels


def _one_step(tmp_path, *overrides, sdf_shift=0.0):
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=10", *overrides])
    tr = Trainer(cfg, tmp_path, progress=False)
    if sdf_shift:
        _push_outside(tr, sdf_shift)
    return tr, tr.train_step()


def _push_outside(tr, shift):
    with torch.no_grad():  # sdf = |x| - 0.5 + shift (+ the hash features' small part): no zero level set
        tr.renderer.field.mlp[-1].bias[0].fill_(shift)


def test_an_sdf_field_with_no_sample_inside_its_surface_has_no_surface(tmp_path):
    """A VolSDF field pushed outside everywhere still renders a haze that the opacity criterion (< 1e-3) misses
    (measured: a white cube at opacity ~0.03 whose export found no surface); no sample with sdf < 0 counts."""
    tr, rec = _one_step(tmp_path / "sphere")
    assert tr.renderer.field.is_sdf and rec["inside"] > 0 and not tr._no_surface(rec)
    tr, rec = _one_step(tmp_path / "haze", sdf_shift=0.52)
    assert rec["opacity"] > 1e-3 and tr.empty_steps == 0  # not empty by opacity: mid-training it may come back
    assert rec["inside"] == 0 and tr._no_surface(rec)  # ... but no surface


def test_the_density_geometry_keeps_the_opacity_criterion(tmp_path):
    tr, rec = _one_step(tmp_path, "renderer.field.geometry=density")
    assert rec["inside"] == 0 and rec["opacity"] > 1e-3 and not tr._no_surface(rec)  # no surface of its own


@pytest.mark.slow
def test_a_run_whose_last_step_finds_no_surface_goes_back_at_once(tmp_path):
    """The white cube (seed 4) lost its surface in its last 25 steps, too late for the 10-step patience: the last
    step itself sends such a run back, so it ends with a surface instead of failing at export."""
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=6", "checkpoint_every=3"])
    logs = []
    tr = Trainer(cfg, tmp_path, progress=False, log=logs.append)
    step, pushed = tr.train_step, []

    def push_before_the_last_step():
        if tr.step == cfg.steps - 1 and not pushed:
            _push_outside(tr, 0.6)
            pushed.append(tr.step)
        return step()

    tr.train_step = push_before_the_last_step
    assert tr.train()
    assert pushed == [5] and len(logs) == 1 and "no surface at the last step, 6" in logs[0], logs
    assert "back to step 3" in logs[0] and tr.times_went_back == 1
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 7)) and recs[-1]["inside"] > 0  # redone, with a surface


@pytest.mark.slow
def test_a_step_that_finds_no_surface_is_not_checkpointed(tmp_path):
    """Going back must land on a field with a surface: a checkpoint step without one is skipped, so the run goes
    back to the checkpoint before it."""
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=6", "checkpoint_every=3"])
    logs = []
    tr = Trainer(cfg, tmp_path, progress=False, log=logs.append)
    step = tr.train_step

    def push_before_step_3():
        if tr.step == 2:
            _push_outside(tr, 0.6)
        return step()

    tr.train_step = push_before_step_3
    assert tr.train()
    assert logs and "back to step 0" in logs[0], logs  # step 3 found no surface and was not checkpointed


def test_the_asset_is_the_moving_average_of_the_weights_and_resumes(tmp_path):
    """ema_decay: the finished run's weights are the EMA of the weights after each step from ema_start on (what
    the outputs and the export show), kept in checkpoints so that a resumed run averages the same way."""
    over = ["prompt=a red cube", "steps=8", "checkpoint_every=2", "ema_decay=0.5", "ema_start=0.5"]

    def trainer(d):
        return Trainer(resolve_config([load_yaml(QUICK)], over), d, progress=False)

    tr = trainer(tmp_path / "a")
    name, p = next((n, q) for n, q in tr.renderer.named_parameters() if q.numel() > 100)
    seen = []
    orig = tr._update_ema

    def spy():
        if tr.step >= 4:
            seen.append(p.detach().clone())
        orig()

    tr._update_ema = spy
    assert tr.train()
    expect = seen[0]
    for w in seen[1:]:
        expect = 0.5 * expect + 0.5 * w
    assert not torch.equal(seen[-1], expect)  # the average differs from the last step's weights
    assert torch.allclose(p.detach(), expect, atol=1e-6)
    assert torch.allclose(load_state(tmp_path / "a" / CHECKPOINT)["renderer"][name], expect, atol=1e-6)

    tr2 = trainer(tmp_path / "b")
    for _ in range(6):
        tr2.train_step()
    tr2.save_checkpoint()
    resumed = trainer(tmp_path / "b")
    resumed.load_checkpoint()
    assert resumed.ema is not None and resumed.train()
    q = dict(resumed.renderer.named_parameters())[name]
    assert torch.allclose(q.detach(), expect, atol=1e-5)


def test_without_ema_the_asset_is_the_last_steps_weights(tmp_path):
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=3"])
    tr = Trainer(cfg, tmp_path, progress=False)
    assert tr.train() and tr.ema is None and "ema" not in load_state(tmp_path / CHECKPOINT)


def test_views_from_below_feed_the_opacity_penalty_only_when_asked(tmp_path):
    """renderer.sparsity_below_views: extra views from below whose opacity penalty joins the loss (the initial
    sphere is visible from below, so the term is positive), drawn from their own resumable sampler."""
    def first(d, *over):
        cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=4", "renderer.sparsity_weight=200",
                                                  *over])
        tr = Trainer(cfg, d, progress=False)
        return tr, tr.train_step()

    _, off = first(tmp_path / "off")
    tr, on = first(tmp_path / "on", "renderer.sparsity_below_views=2")
    assert off["sparsity_below"] == 0.0 and on["sparsity_below"] > 0.1
    assert on["t"] == off["t"]  # the guided views' draws are not shifted by the extra views
    tr.save_checkpoint()
    again = Trainer(tr.cfg, tmp_path / "on", progress=False)
    again.load_checkpoint()
    assert torch.equal(again.sampler_below.sample(1).c2w, tr.sampler_below.sample(1).c2w)
    el = tr.sampler_below.sample(8).elevation
    assert (el >= -60).all() and (el <= -20).all()


def test_a_collapsing_object_goes_back_with_half_the_penalty(tmp_path):
    """A partial collapse (renders' mean opacity far below its peak, e.g. a white cube flattening into a slab) goes
    back like a vanish; the trace that measures it is saved with the checkpoint."""
    cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=20", "renderer.sparsity_ramp=0",
                                              "renderer.sparsity_weight=1", "collapse_ratio=0.4"])
    logs = []
    tr = Trainer(cfg, tmp_path, progress=False, log=logs.append)
    recs = [tr.train_step() for _ in range(4)]
    avg, peak = tr.opacity_trace
    assert 0 < avg <= peak and avg == pytest.approx(0.95 * (0.95 * (0.95 * recs[0]["opacity"] + 0.05 * recs[1]
                                                                    ["opacity"]) + 0.05 * recs[2]["opacity"])
                                                    + 0.05 * recs[3]["opacity"])
    tr.save_checkpoint()
    saved = list(tr.opacity_trace)
    rec = tr.train_step()
    assert not tr._recover_if_empty(rec)  # healthy: no going back
    tr.opacity_trace = [0.3 * peak, peak]  # as a slab's renders would read
    assert tr._recover_if_empty(rec)
    assert "collapsed" in logs[-1] and "x0.5" in logs[-1] and tr.step == 4 and tr.sparsity_scale == 0.5, logs
    assert tr.opacity_trace == pytest.approx(saved)  # the checkpoint's trace is back too


def test_the_collapse_criterion_changes_no_run_it_does_not_send_back(tmp_path):
    def losses(*extra):
        cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=6", *extra])
        tr = Trainer(cfg, tmp_path / str(len(extra)), progress=False)
        return [tr.train_step()["loss"] for _ in range(6)], tr

    off, tr_off = losses()  # off by default
    on, tr_on = losses("collapse_ratio=0.01")
    assert on == off and tr_off.opacity_trace is None and tr_on.opacity_trace is not None


def test_a_runs_draws_do_not_depend_on_how_much_randomness_building_the_prior_used(tmp_path, monkeypatch):
    """Networks that load weights (the prior, k_psi) initialise randomly first; how many draws that takes (a token
    row added to the prior's vocabulary once shifted every run) must not change the run's field or its draws."""
    from dreamlmc.guidance import backends, sds

    def first_step(name):
        cfg = resolve_config([load_yaml(QUICK)], ["prompt=a red cube", "steps=4"])
        tr = Trainer(cfg, tmp_path / name, progress=False)
        return tr.train_step()["loss"], next(tr.renderer.parameters()).detach().clone()

    loss, p = first_step("plain")
    init = sds.ScoreDistillation.__init__

    def hungrier(self, *a, **k):  # a guidance whose construction draws more from the global generator
        torch.randn(4096)
        init(self, *a, **k)

    load = backends.load_backend

    def hungry_load(*a, **k):  # a prior with a larger vocabulary draws more for its embedding's initialisation
        torch.randn(4096)
        return load(*a, **k)

    monkeypatch.setattr(sds.ScoreDistillation, "__init__", hungrier)
    monkeypatch.setattr(backends, "load_backend", hungry_load)
    loss2, p2 = first_step("hungry")
    assert loss2 == loss and torch.equal(p, p2)
