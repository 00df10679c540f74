"""The dreamlmc command line. User mistakes become one line on stderr and exit status 2; bugs keep tracebacks."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

from dreamlmc.errors import DreamlmcError

EXIT_USER_ERROR = 2


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=".*low_cpu_mem_usage.*")


# ------------------------------------------------------------------------------------------------- run folders

def _load_presets(paths: List[str]):
    from dreamlmc.config import load_yaml

    return [load_yaml(Path(p)) for p in paths]


def _train_overrides(args) -> List[str]:
    """The contract flags, as dotted overrides applied after presets and before trailing key=value."""
    o = []
    if args.prompt is not None:
        o.append(f"prompt={_yaml_str(args.prompt)}")
    for flag, key in (("guidance", "guidance.kind"), ("guidance_scale", "guidance.guidance_scale"),
                      ("steps", "steps"), ("seed", "seed"), ("eps_seed", "guidance.eps_seed"), ("model", "model"),
                      ("device", "device")):
        v = getattr(args, flag, None)
        if v is not None:
            o.append(f"{key}={_yaml_str(v) if isinstance(v, str) else v}")
    if getattr(args, "fixed_eps", None) is not None:
        o.append(f"guidance.fixed_eps={'true' if args.fixed_eps else 'false'}")
    return o


def _yaml_str(s: str) -> str:
    import json

    return json.dumps(s)  # JSON strings are valid YAML scalars


def cmd_train(args) -> int:
    from dreamlmc import runs
    from dreamlmc.trainer import resolve_config

    if args.resume:
        runs.resume(Path(args.resume), args.steps, args.overrides, args.quiet)
        return 0
    if args.out is None:
        raise DreamlmcError("--out RUN_DIR is required (or --resume RUN_DIR)")
    if args.prompt is None and not any(o.startswith("prompt=") for o in args.overrides):
        raise DreamlmcError("--prompt is required, e.g. --prompt \"a red cube\"")
    cfg = resolve_config(_load_presets(args.config), _train_overrides(args) + list(args.overrides))
    replaced = runs.prepare_run_dir(Path(args.out), args.force, set_aside=True)
    runs.run_training(cfg, Path(args.out), args.quiet, replaced=replaced)
    return 0


def cmd_variations(args) -> int:
    from dreamlmc import runs

    runs.variations(_load_presets(args.config), _train_overrides(args) + list(args.overrides), args.count,
                    Path(args.out), args.force, args.quiet)
    return 0


def cmd_batch(args) -> int:
    from dreamlmc import batch

    if args.variations < 0:
        raise DreamlmcError("--variations must be >= 0")
    if args.workers is not None and args.workers < 1:
        raise DreamlmcError("--workers must be >= 1")
    if args.cpus_per_run is not None and args.cpus_per_run < 1:
        raise DreamlmcError("--cpus-per-run must be >= 1")
    entries = batch.load_entries(Path(args.prompts))
    runs = batch.expand(entries, args.variations)
    failed = batch.preflight(runs, args.config, args.overrides)  # bad prompts stop here, before any work
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DreamlmcError(f"--out {out} is a file, not a folder")
    summary = batch.run_batch(runs, out, presets=args.config, overrides=args.overrides, workers=args.workers,
                              cpus_per_run=args.cpus_per_run, address=args.address, progress=not args.quiet,
                              preflight_failed=failed)
    bad = [r for r in summary["runs"] if r["status"] != "ok"]
    if not args.quiet or bad:
        print(f"{summary['ok']}/{summary['total']} runs finished in {summary['wall_s']:.0f} s -> "
              f"{out / 'summary.json'}, {out / 'contact_sheet.png'}", file=sys.stderr if bad else sys.stdout)
    for r in bad:
        print(f"dreamlmc: run {r['slug']} {r['status']}: {r['error']}", file=sys.stderr)
    if summary.get("interrupted_by"):
        return 130
    return 1 if bad else 0


def cmd_report(args) -> int:
    from dreamlmc.report import report_any

    for p in report_any(Path(args.run_dir)):
        print(p)
    return 0


def cmd_view(args) -> int:
    from dreamlmc.report import check_run, finished_runs, is_run, report_any, serve

    target = Path(args.run_dir)
    if target.is_dir() and not is_run(target):
        if not finished_runs(target):
            raise DreamlmcError(f"{target} holds no finished dreamlmc runs")
        if not (target / "index.html").exists():
            report_any(target)
    else:
        check_run(target)
        if not (target / "report.html").exists():
            report_any(target)
    serve(target, open_browser=not args.no_browser, port=args.port)
    return 0


def cmd_export(args) -> int:
    from dreamlmc import runs

    threshold = None if args.threshold is None else (args.threshold if args.threshold == "auto" else
                                                     _float(args.threshold, "--threshold"))
    print(runs.export(Path(args.run_dir), args.format, args.resolution, args.texture, threshold,
                      Path(args.out) if args.out else None))
    return 0


def _float(s: str, name: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise DreamlmcError(f"{name} must be a number or 'auto', got {s!r}")


MAX_SAMPLES = 4096  # dreamlmc sample --count: above this the contact sheet itself becomes unwieldy (README)
SAMPLE_CHUNK = 64  # samples drawn at once: memory stays bounded whatever --count is


def cmd_sample(args) -> int:
    import torch
    from tqdm import tqdm

    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.media import save_png

    if not 1 <= args.count <= MAX_SAMPLES:
        raise DreamlmcError(f"--count must be between 1 and {MAX_SAMPLES}, got {args.count}")
    if not 1 <= args.steps <= 1000:
        raise DreamlmcError(f"--steps must be between 1 and 1000, got {args.steps}")
    if not (0 <= args.guidance_scale <= 1e4):
        raise DreamlmcError(f"--guidance-scale must be between 0 and 10000, got {args.guidance_scale}")
    if args.seed < 0:
        raise DreamlmcError(f"--seed must be >= 0, got {args.seed}")
    from dreamlmc.guidance.backends import check_prompt

    check_prompt(args.model, args.prompt)
    be = load_backend(args.model)
    g = torch.Generator().manual_seed(args.seed)
    # chunks of SAMPLE_CHUNK, kept as uint8 rows of the contact sheet: bounded memory for any --count
    cols = min(args.count, 8)
    rows, row = [], []
    chunks = range(0, args.count, SAMPLE_CHUNK)
    for start in tqdm(chunks, desc="sampling", unit="chunk", disable=args.count <= SAMPLE_CHUNK or args.quiet):
        n = min(SAMPLE_CHUNK, args.count - start)
        for img in be.sample_images([args.prompt] * n, args.guidance_scale, args.steps, generator=g):
            row.append(img)
            if len(row) == cols:
                rows.append((torch.cat(row, -1) * 255 + 0.5).to(torch.uint8))
                row = []
    if row:
        row += [torch.ones_like(row[0])] * (cols - len(row))
        rows.append((torch.cat(row, -1) * 255 + 0.5).to(torch.uint8))
    save_png(torch.cat(rows, -2).float() / 255, Path(args.out))
    print(args.out)
    return 0


def _settings(cls, args, flags: dict):
    """A command's settings through the config system: dataclass defaults <- --config presets <- the flags given
    (flags maps dataclass key -> args attribute; None = not given) <- trailing key=value overrides. A bad value set by
    a flag is reported with the flag's name."""
    import json
    import re

    from dreamlmc.config import build

    given = {key: getattr(args, attr) for key, attr in flags.items() if getattr(args, attr, None) is not None}
    overrides = [f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in given.items()]
    try:
        return build(cls, _load_presets(args.config), overrides + list(args.overrides))
    except DreamlmcError as e:
        msg = str(e)
        m = re.match(r"config key '(\w+)(\[\d+\])?'", msg)
        if m and m.group(1) in given and not any(o.startswith(m.group(1) + "=") for o in args.overrides):
            msg = msg.replace(f"config key '{m.group(1)}{m.group(2) or ''}'", "--" + flags[m.group(1)].replace("_", "-"), 1)
        raise DreamlmcError(msg)


def _save_settings(cfg, out: Path) -> None:
    """The resolved settings beside a command's output: OUT.config.yaml."""
    from dreamlmc.config import dump_yaml

    dump_yaml(cfg, out.with_name(out.stem + ".config.yaml"))


IMAGE_FLAGS = {k: k for k in ("prompt", "init", "l2", "guidance", "source_prompt", "guidance_scale", "steps", "seed", "eps_seed",
                              "fixed_eps", "variations", "lr", "model", "device", "resolution")}
TRANSLATE_FLAGS = {"prompt": "prompt", "source_prompts": "source", "images": "images", "per_source": "per_source",
                   "steps": "steps", "batch_size": "batch_size", "lr": "lr", "l2": "l2", "guidance": "guidance",
                   "source_prompt": "source_prompt", "guidance_scale": "guidance_scale", "fixed_eps": "fixed_eps",
                   "seed": "seed", "model": "model", "device": "device"}
CORRECTIVE_FLAGS = {k: k for k in ("model", "images", "prompts", "steps", "batch_size", "lr", "per_prompt", "seed")}


def cmd_image(args) -> int:
    from dreamlmc.image import ImageConfig, run_image

    icfg = _settings(ImageConfig, args, IMAGE_FLAGS)
    out = run_image(icfg, Path(args.out), progress=not args.quiet)
    _save_settings(icfg, Path(args.out))
    print(out)
    return 0


def cmd_translate_train(args) -> int:
    from dreamlmc.translate import TranslateConfig, train_translation

    out = Path(args.out)
    if out.exists() and not args.force:
        raise DreamlmcError(f"--out {out} exists; pass --force to replace it")
    if args.source is not None:
        args.source = tuple(args.source)
    tcfg = _settings(TranslateConfig, args, TRANSLATE_FLAGS)
    card = train_translation(tcfg, out, progress=not args.quiet, figure=Path(args.figure) if args.figure else None)
    _save_settings(tcfg, out)
    print(f"{out} ({card['sources']} source images, {card['steps']} steps, final loss {card['final_loss']:.4g})")
    return 0


def cmd_translate_apply(args) -> int:
    from dreamlmc.translate import apply_translation

    print(apply_translation(args.net, args.input, Path(args.out), device=args.device))
    return 0


def cmd_corrective_train(args) -> int:
    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.corrective import load_corrective
    from dreamlmc.guidance.corrective_train import CorrectiveConfig, diagnostic_figure, train_corrective

    if args.prompts is not None:
        args.prompts = tuple(args.prompts)
    ccfg = _settings(CorrectiveConfig, args, CORRECTIVE_FLAGS)
    if ccfg.images is not None and not Path(ccfg.images).is_dir():
        raise DreamlmcError(f"--images {ccfg.images} is not a folder")
    be = load_backend(ccfg.model)
    prompts = ccfg.prompts
    if not prompts and ccfg.images is None:
        world = be.world()
        if world is None:
            raise DreamlmcError("pass --prompts \"...\" \"...\" (samples to learn from) or --images DIR")
        g = world.grammar  # the built-in world: every (colour, shape) prompt
        prompts = tuple(g.prompt_for(c, s) for c in g.COLOURS for s in g.SHAPES)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DreamlmcError(f"--out {out}: cannot create its folder ({e.strerror})")
    card = train_corrective(be, out, prompts=prompts, images=Path(ccfg.images) if ccfg.images else None,
                            steps=ccfg.steps, batch_size=ccfg.batch_size, lr=ccfg.lr, t_range=ccfg.t_range,
                            per_prompt=ccfg.per_prompt, sample_guidance=ccfg.sample_guidance,
                            sample_steps=ccfg.sample_steps, seed=ccfg.seed, hidden=ccfg.hidden, layers=ccfg.layers,
                            kernel=ccfg.kernel, progress=not args.quiet)
    _save_settings(ccfg, out)
    if args.figure:
        from dreamlmc.checkpoint import load_state
        from dreamlmc.guidance.corrective_train import resume_path

        net, _ = load_corrective(out, expect_model_id=be.model_id)
        state = load_state(resume_path(out))
        diagnostic_figure(be, net, state["pool_x"][:: max(1, len(state["pool_x"]) // 4)][:4],
                          list(state["pool_prompts"])[:: max(1, len(state["pool_prompts"]) // 4)][:4],
                          Path(args.figure))
    print(f"{out}: loss {card['initial_loss']:.4g} -> {card['final_loss']:.4g} after {card['steps']} steps")
    return 0


# ------------------------------------------------------------------------------------------------- parser

def _add_train_flags(p: argparse.ArgumentParser, variations: bool = False) -> None:
    p.add_argument("--prompt", help='what to make, e.g. "a red cube"')
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--guidance", choices=["sds", "lmc-sds"], help="guidance kind (default lmc-sds)")
    p.add_argument("--guidance-scale", type=float,
                   help="s in eps_u + s (eps_c - eps_u) at the start of training (1 = purely conditional); the "
                        "built-in preset moves it to guidance.guidance_scale_end_factor (0.6) x s by the end")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--seed", type=int, help="seed of cameras, field init and timesteps")
    if not variations:
        p.add_argument("--fixed-eps", dest="fixed_eps", action="store_true", default=None,
                       help="hold one noise sample for the whole run (default)")
        p.add_argument("--no-fixed-eps", dest="fixed_eps", action="store_false", help="fresh noise every step")
        p.add_argument("--eps-seed", type=int, help="seed of the fixed noise sample")
    p.add_argument("--model", help="builtin (default), a diffusers hub id, or a local diffusers folder")
    p.add_argument("--config", action="append", default=[], metavar="PRESET.yaml",
                   help="YAML preset(s) applied over the defaults, in order")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. renderer.num_samples=32")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): 'dreamlmc: error: ...' and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"dreamlmc: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from dreamlmc import __version__

    ap = _Parser(prog="dreamlmc", description="Text-to-3D with SDS / LMC-SDS guidance. "
                 "Runs offline on the CPU with the built-in prior.")
    ap.add_argument("--version", action="version", version=f"dreamlmc {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a 3D asset from a prompt")
    _add_train_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("variations", help="fixed-eps variations: one run per eps seed 0..count-1")
    _add_train_flags(p, variations=True)
    p.add_argument("--count", type=int, default=4)
    p.set_defaults(fn=cmd_variations, fixed_eps=None)

    p = sub.add_parser("batch", help="many prompts (a text or YAML file), one run each, in parallel on Ray")
    p.add_argument("prompts", metavar="PROMPTS", help="a text file (one prompt per line, # comments) or a YAML list")
    p.add_argument("--out", required=True, help="folder of the batch: one run folder per run, plus summaries")
    p.add_argument("--variations", type=int, default=0, help="K fixed-eps variations (eps seeds 0..K-1) per prompt")
    p.add_argument("--config", action="append", default=[], metavar="PRESET.yaml", help="YAML preset(s) for every run")
    p.add_argument("--address", help="an existing Ray cluster (e.g. auto or ray://host:10001); default: start one here")
    p.add_argument("--workers", type=int, help="runs in parallel (default: one per pair of cores)")
    p.add_argument("--cpus-per-run", type=int, help="cores (and threads) per run (default: cores / workers)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides for every run")
    p.set_defaults(fn=cmd_batch)

    p = sub.add_parser("report", help="(re)write report.html of a finished run, or of every run in a folder + index.html")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("view", help="serve a run's report (or a folder's index) on localhost and open a browser")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.set_defaults(fn=cmd_view)

    p = sub.add_parser("export", help="re-export the mesh of a run from its checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["glb", "obj", "ply"])
    p.add_argument("--resolution", type=int, help="density grid resolution (default 128)")
    p.add_argument("--texture", action="store_true", help="UV-unwrap (xatlas) and bake the albedo into a texture")
    p.add_argument("--threshold", help="density iso-level, or auto")
    p.add_argument("--out", help="output file (default RUN_DIR/model.FORMAT)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("sample", help="draw images from the built-in prior (a sanity check)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="builtin")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("image", help="2D synthesis or editing with SDS / LMC-SDS / DDS (no renderer)")
    p.add_argument("--prompt")
    p.add_argument("--out", required=True)
    p.add_argument("--init", help="image to edit (default: synthesis from 50%% grey)")
    p.add_argument("--l2", type=float, help="weight of an L2 tie to --init (default 0)")
    p.add_argument("--guidance", choices=["sds", "lmc-sds", "dds"], help="default lmc-sds (dds: editing only)")
    p.add_argument("--source-prompt", help="dds: what --init shows, e.g. 'a blue cube'")
    p.add_argument("--guidance-scale", type=float)
    p.add_argument("--steps", type=int, help="default 300")
    p.add_argument("--lr", type=float, help="default 0.02")
    p.add_argument("--seed", type=int)
    p.add_argument("--eps-seed", type=int)
    p.add_argument("--fixed-eps", dest="fixed_eps", action="store_true", default=None, help="(default)")
    p.add_argument("--no-fixed-eps", dest="fixed_eps", action="store_false")
    p.add_argument("--variations", type=int, help="N eps seeds -> a grid (default 1)")
    p.add_argument("--resolution", type=int, help="image size (default: the prior's)")
    p.add_argument("--model", help="default builtin")
    p.add_argument("--device", help="default cpu")
    p.add_argument("--config", action="append", default=[], metavar="PRESET.yaml")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(fn=cmd_image)

    p = sub.add_parser("translate", help="an image-to-image translation network trained with SDS / LMC-SDS")
    tsub = p.add_subparsers(dest="translate_command", metavar="ACTION", parser_class=_Parser)
    c = tsub.add_parser("train", help="train a network that makes images follow --prompt")
    c.add_argument("--prompt", help="target prompt")
    c.add_argument("--source", nargs="+", help="built-in world prompts whose ground-truth renders are the sources")
    c.add_argument("--images", help="folder of source images (instead of --source)")
    c.add_argument("--per-source", type=int, help="renders per --source prompt (default 32)")
    c.add_argument("--out", required=True, help="network .safetensors (a .json card is written beside it)")
    c.add_argument("--steps", type=int, help="default 300")
    c.add_argument("--batch-size", type=int, help="default 8")
    c.add_argument("--lr", type=float, help="default 2e-3")
    c.add_argument("--l2", type=float, help="weight of the L2 tie to the input image (default 0.5)")
    c.add_argument("--guidance", choices=["sds", "lmc-sds", "dds"], help="default lmc-sds")
    c.add_argument("--source-prompt", help="dds: what the source images show (default with --source: each one's "
                   "own prompt)")
    c.add_argument("--guidance-scale", type=float)
    c.add_argument("--fixed-eps", action="store_true", default=None, help="one eps for all steps (default: fresh)")
    c.add_argument("--seed", type=int)
    c.add_argument("--model", help="default builtin")
    c.add_argument("--device", help="default cpu")
    c.add_argument("--figure", help="also write sources (top) and their translations (bottom) here")
    c.add_argument("--config", action="append", default=[], metavar="PRESET.yaml")
    c.add_argument("--force", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.set_defaults(fn=cmd_translate_train)
    c = tsub.add_parser("apply", help="translate images with a trained network (no diffusion model needed)")
    c.add_argument("--net", required=True)
    c.add_argument("--input", nargs="+", required=True)
    c.add_argument("--out", required=True, help="PNG: inputs on top, translations below")
    c.add_argument("--device", default="cpu")
    c.set_defaults(fn=cmd_translate_apply)
    p.set_defaults(fn=lambda a: (p.print_help(), 0)[1])

    p = sub.add_parser("corrective", help="the LMC corrective k_psi")
    csub = p.add_subparsers(dest="corrective_command", metavar="ACTION", parser_class=_Parser)
    c = csub.add_parser("train", help="train k_psi for a prior")
    c.add_argument("--model", help="default builtin")
    c.add_argument("--images", help="folder of clean images, their prompts in its prompts.json if it has one "
                                    "(default: the prior's own samples)")
    c.add_argument("--prompts", nargs="*", default=None, help="prompts to sample (default for builtin: all 48)")
    c.add_argument("--out", required=True, help="k_psi .safetensors (a .json card is written beside it)")
    c.add_argument("--steps", type=int, help="default 1500")
    c.add_argument("--batch-size", type=int, help="default 32")
    c.add_argument("--lr", type=float, help="default 1e-3")
    c.add_argument("--per-prompt", type=int, help="prior samples per prompt (default 8)")
    c.add_argument("--seed", type=int)
    c.add_argument("--figure", help="also write the diagnostic figure (x, x_hat, k_psi, spectra) here")
    c.add_argument("--config", action="append", default=[], metavar="PRESET.yaml")
    c.add_argument("--quiet", action="store_true")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.set_defaults(fn=cmd_corrective_train)
    p.set_defaults(fn=lambda a: (p.print_help(), 0)[1])
    return ap


def parse_command(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """parse_args, except that key=value overrides may also follow other options (argparse leaves them over after a
    leading positional such as batch's PROMPTS). Usage errors exit 2 through parser.error."""
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: Optional[List[str]] = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    try:
        args = parse_command(parser, argv)
    except SystemExit as e:  # usage errors (already printed in one line), --help, --version
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR
    if not getattr(args, "fn", None):
        parser.print_help()
        return 0
    try:
        return int(args.fn(args) or 0)
    except DreamlmcError as e:
        print(f"dreamlmc: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dreamlmc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
