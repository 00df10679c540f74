"""Run folders: create one (never replacing a finished run without --force), train into it, resume it, make
fixed-ε variations, re-export its mesh. One writer per folder (io.RunLock).

A run folder holds config.yaml (the fully resolved config), metrics.jsonl, checkpoints/last.safetensors and, once
finished, model.glb, preview.png, turntable.mp4 (or .gif), run.json (wall time, peak RSS, versions), report.html
and DONE.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from dreamlmc.errors import DreamlmcError

DONE = "DONE"


class SetAside:
    """A folder --force replaces, moved to a hidden sibling until the new run's set-up has succeeded: `discard` it
    then, or `restore` it (the new folder goes) should the set-up fail. A typo in --force's command must not cost a
    finished run."""

    def __init__(self, home: Path):
        self.home, self.aside = home, home.with_name(f".{home.name}.replaced")
        if self.aside.exists():  # left by a process killed in its set-up
            shutil.rmtree(self.aside)
        home.rename(self.aside)

    def discard(self) -> None:
        if self.aside.exists():
            shutil.rmtree(self.aside)

    def restore(self) -> None:
        if self.aside.exists():
            shutil.rmtree(self.home, ignore_errors=True)
            self.aside.rename(self.home)


def prepare_run_dir(out: Path, force: bool, set_aside: bool = False) -> Optional[SetAside]:
    """Create a fresh run folder; refuse to touch an existing run without --force. set_aside: the run --force
    replaces is moved aside (the SetAside returned) instead of deleted, for the caller to discard once the new
    run's set-up has succeeded or to restore should it fail."""
    out, aside = Path(out), None
    if out.exists() and not out.is_dir():
        raise DreamlmcError(f"--out {out} is a file, not a folder")
    from dreamlmc.io import RunLock

    # a run that failed in its set-up (a bad prompt, a missing model) leaves only its released lock: nothing to keep
    if out.is_dir() and [p.name for p in out.iterdir()] == [RunLock.NAME] and not RunLock.held_by_other(out):
        (out / RunLock.NAME).unlink()
    if out.exists() and any(out.iterdir()):
        if (out / RunLock.NAME).exists() and RunLock.held_by_other(out):
            raise DreamlmcError(f"--out {out} is being written by another dreamlmc process; wait for it or stop it "
                                "(--force never replaces a run that is in progress)")
        if not force:
            what = "a finished run" if (out / DONE).exists() else (
                "an unfinished run (continue it with --resume)" if (out / "checkpoints").exists() else "files")
            raise DreamlmcError(f"--out {out} already holds {what}; pass --force to replace it")
        if set_aside:
            aside = SetAside(out)
        else:
            shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        if aside is not None:
            aside.restore()
        raise DreamlmcError(f"--out {out} is not writable ({e.strerror or type(e).__name__})")
    return aside


def run_training(cfg, out: Path, quiet: bool, resume: bool = False, log=print, trainer_cls=None,
                 replaced: Optional[SetAside] = None) -> Path:
    """Train (or resume) into the run folder, then write its outputs and DONE. trainer_cls: a Trainer subclass
    (the quality benchmark's photometric ceiling); default Trainer. replaced: the folder this run replaces (out
    itself, or the variations folder that holds it), set aside by prepare_run_dir: discarded once the set-up has
    succeeded, restored if it fails."""
    from dreamlmc.io import RunLock

    try:
        with RunLock(out):  # one writer per run folder
            return _run_training_locked(cfg, out, quiet, resume, log, trainer_cls, replaced)
    except BaseException:
        if replaced is not None:  # failed before training began: the old run comes back
            replaced.restore()
        raise


def _run_training_locked(cfg, out: Path, quiet: bool, resume: bool, log, trainer_cls, replaced=None) -> Path:
    from dreamlmc.config import dump_yaml
    from dreamlmc.io import atomic_write_text
    from dreamlmc.trainer import Trainer

    t0 = time.time()
    trainer = (trainer_cls or Trainer)(cfg, out, progress=not quiet, log=log)
    if resume:
        trainer.load_checkpoint()
    else:
        if cfg.init_from:
            trainer.init_field_from(cfg.init_from)
        dump_yaml(cfg, out / "config.yaml")
    if replaced is not None:  # the set-up succeeded: the replaced run goes
        replaced.discard()
    if not trainer.train():
        raise SystemExit(130)
    if not quiet:
        log("writing preview, turntable and mesh ...")
    outs = trainer.write_outputs()
    wall = time.time() - t0
    atomic_write_text(out / "run.json", json.dumps(_run_info(trainer, wall), indent=2))
    atomic_write_text(out / DONE, f"finished step {trainer.step} in {wall:.1f} s\n")
    from dreamlmc.report import write_report

    report = write_report(out)
    if not quiet:
        log(f"done in {wall:.0f} s: {outs['mesh']}, {outs['preview']}, {outs['turntable']}")
        log(f"report: {report}")
    return out


def _run_info(trainer, wall_s: float) -> dict:
    """What run.json records: wall time of this invocation, the process's peak RSS, versions, the prior, and how
    often the object vanished and the run went back to its last checkpoint (each time halving the opacity penalty;
    kept in the checkpoint, so a resumed run counts the times before its resume too)."""
    import platform
    import resource

    import torch

    from dreamlmc import __version__

    return {"wall_s": wall_s, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,
            "steps": trainer.step, "skipped_steps": trainer.skipped, "dreamlmc": __version__,
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "prior_fingerprint": getattr(trainer.backend, "fingerprint", None),
            "went_back": trainer.times_went_back, "opacity_penalty_scale": trainer.sparsity_scale}


def resume(run: Path, steps: Optional[int], overrides: Sequence[str], quiet: bool) -> Path:
    """Continue an interrupted run from its last checkpoint (or a finished one further, with steps)."""
    from dreamlmc.config import dump_yaml, load_yaml
    from dreamlmc.io import RunLock
    from dreamlmc.trainer import resolve_config

    run = Path(run)
    if not (run / "config.yaml").exists():
        raise DreamlmcError(f"--resume {run}: no config.yaml there; is it a dreamlmc run folder?")
    if (run / DONE).exists() and steps is None:
        raise DreamlmcError(f"--resume {run}: that run is finished; pass --steps N to train it further")
    if not (run / "checkpoints" / "last.safetensors").exists():
        raise DreamlmcError(f"--resume {run}: no checkpoint yet; start it again with --force")
    if RunLock.held_by_other(run):  # before touching config.yaml or DONE
        raise DreamlmcError(f"--resume {run}: it is being written by another dreamlmc process; wait for it or "
                            "stop it")
    extra = [f"steps={steps}"] if steps is not None else []
    cfg = resolve_config([load_yaml(run / "config.yaml")], extra + list(overrides))
    dump_yaml(cfg, run / "config.yaml")
    (run / DONE).unlink(missing_ok=True)
    return run_training(cfg, run, quiet, resume=True)


def variations(presets: List[Dict], overrides: Sequence[str], count: int, out: Path, force: bool,
               quiet: bool, log=print) -> Path:
    """count runs out/eps0 .. eps{count-1}: each exactly `dreamlmc train` with the same settings plus
    --fixed-eps --eps-seed i; then out/variations.png (the previews stacked) and out/index.html."""
    from dreamlmc.media import load_png, save_png
    from dreamlmc.report import write_index
    from dreamlmc.trainer import resolve_config

    if not 1 <= count <= 64:
        raise DreamlmcError(f"--count must be between 1 and 64 (each variation is a full training run), got {count}")
    from dreamlmc.guidance.backends import check_prompt

    out = Path(out)
    first = resolve_config(presets, list(overrides) + ["guidance.fixed_eps=true", "guidance.eps_seed=0"])
    check_prompt(first.model, first.prompt)  # bad settings or prompts fail before --force touches anything
    replaced = prepare_run_dir(out, force, set_aside=True)
    tiles = []
    for i in range(count):
        cfg = first if i == 0 else resolve_config(presets, list(overrides) + ["guidance.fixed_eps=true",
                                                                             f"guidance.eps_seed={i}"])
        run = out / f"eps{i}"
        try:
            prepare_run_dir(run, False)
        except BaseException:
            if i == 0 and replaced is not None:  # nothing new was made yet: the replaced folder comes back
                replaced.restore()
            raise
        if not quiet:
            log(f"variation {i + 1}/{count} (eps seed {i}) -> {run}")
        # the folder --force replaces goes once the first variation's set-up has succeeded, and comes back if it fails
        run_training(cfg, run, quiet, replaced=replaced if i == 0 else None)
        tiles.append(load_png(run / "preview.png"))
    import torch

    save_png(torch.cat(tiles, dim=1), out / "variations.png")
    index = write_index(out)
    if not quiet:
        log(f"contact sheet: {out / 'variations.png'}")
        log(f"index: {index}")
    return out


def run_config(run: Path):
    """The TrainConfig of a finished (or stopped) run folder that has a checkpoint."""
    from dreamlmc.config import load_yaml
    from dreamlmc.trainer import resolve_config

    run = Path(run)
    if not (run / "config.yaml").exists() or not (run / "checkpoints" / "last.safetensors").exists():
        raise DreamlmcError(f"{run} is not a run folder of dreamlmc with a checkpoint (config.yaml, "
                            "checkpoints/last.safetensors)")
    return resolve_config([load_yaml(run / "config.yaml")], [])


def load_trainer(run: Path, cfg=None, backend=None):
    """A Trainer at a run's last checkpoint (to export, render or inspect it). backend: one already loaded."""
    from dreamlmc.trainer import Trainer

    run = Path(run)
    trainer = Trainer(cfg or run_config(run), run, backend=backend, progress=False, log=lambda s: None)
    trainer.load_checkpoint()
    return trainer


def export(run: Path, fmt: Optional[str] = None, resolution: Optional[int] = None, texture: bool = False,
           threshold=None, out: Optional[Path] = None) -> Path:
    """Re-export a run's mesh from its checkpoint (another format, resolution, a baked texture, an iso-level)."""
    from dataclasses import replace

    from dreamlmc.io import RunLock

    run = Path(run)
    cfg = run_config(run)
    ecfg = replace(cfg.export, format=fmt or cfg.export.format, resolution=resolution or cfg.export.resolution,
                   texture=texture or cfg.export.texture)
    if not 8 <= ecfg.resolution <= 512:
        raise DreamlmcError(f"--resolution must be between 8 and 512 (cells per axis), got {ecfg.resolution}")
    with RunLock(run):
        trainer = load_trainer(run, cfg)
        out = Path(out) if out else run / f"model.{ecfg.format}"
        trainer.export_mesh(out, ecfg, threshold=threshold)
    return out
