"""Where a training step's time goes, and the whole command's wall time and peak memory.

Per-iteration breakdown of the default `dreamlmc train` configuration (built-in prior, LMC-SDS): render forward,
guidance (diffusion forward; corrective forward+backward measured separately), backward, optimiser step,
occupancy-grid update (amortised over its interval); medians over repeats after a warm-up that gives the field a
typical state. Then (--e2e) the time from command to finished GLB and the peak RSS of `dreamlmc train`.

    python tools/bench_speed.py [--device cpu|cuda] [--warmup 150] [--repeats 30] [--e2e]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from tools.benchutil import machine, run_cli, table, write_json  # noqa: E402

from dreamlmc.renderers.shading import choose_mode  # noqa: E402
from dreamlmc.trainer import Trainer, resolve_config  # noqa: E402


def breakdown(device: str, warmup: int, repeats: int, overrides):
    cfg = resolve_config([], [f"device={device}", "prompt=a red cube"] + list(overrides))
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, Path(d), progress=False)
        for _ in range(warmup):
            tr.train_step()
        sync = torch.cuda.synchronize if tr.device.type == "cuda" else (lambda: None)
        be = tr.backend
        unet_time = []
        orig_predict = be._predict

        def timed_predict(*a, **k):
            sync()
            t0 = time.perf_counter()
            out = orig_predict(*a, **k)
            sync()
            unet_time.append(time.perf_counter() - t0)
            return out

        be._predict = timed_predict
        phases = {k: [] for k in ("render forward", "guidance (all)", "  diffusion forward", "backward",
                                  "optimiser step", "occupancy update (amortised)", "step total")}
        for _ in range(repeats):
            unet_time.clear()
            sync()
            t0 = time.perf_counter()
            cams = tr.sampler.sample(cfg.batch_size).to(tr.device)
            mode = choose_mode(tr.step, cfg.renderer.shading, tr.generator)
            out = tr.renderer(cams, mode, tr.generator)
            sync()
            t1 = time.perf_counter()
            g = tr.guidance(out["rgb"], tr.prompts_for(cams.views))
            sync()
            t2 = time.perf_counter()
            loss = g["loss"] + cfg.renderer.orientation_weight * out["orientation"]
            tr.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sync()
            t3 = time.perf_counter()
            tr.optimizer.step()
            sync()
            t4 = time.perf_counter()
            tr.step += 1
            phases["render forward"].append(t1 - t0)
            phases["guidance (all)"].append(t2 - t1)
            phases["  diffusion forward"].append(sum(unet_time))
            phases["backward"].append(t3 - t2)
            phases["optimiser step"].append(t4 - t3)
            phases["step total"].append(t4 - t0)
        occ = []
        for _ in range(3):
            sync()
            t0 = time.perf_counter()
            tr.renderer.update_occupancy(0, force=True)
            sync()
            occ.append((time.perf_counter() - t0) / cfg.renderer.occupancy.update_every)
        phases["occupancy update (amortised)"] = occ
        # the corrective alone (forward + backward on the prior's input shape)
        k = tr.guidance.corrective
        x = torch.randn((cfg.batch_size,) + tuple(be.latent_shape), device=tr.device, requires_grad=True)
        tk = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            k(x, torch.full((cfg.batch_size,), 0.5, device=tr.device)).square().sum().backward()
            sync()
            tk.append(time.perf_counter() - t0)
        phases["  corrective fwd+bwd (in guidance+backward)"] = tk
    rows = [{"phase": k, "ms": 1000 * statistics.median(v)} for k, v in phases.items()]
    total = statistics.median(phases["step total"]) + statistics.median(occ)
    rows.append({"phase": "iterations per second", "ms": None, "it_per_s": 1.0 / total})
    return rows, cfg


def e2e(device: str, prompt: str, extra):
    """Wall time and peak RSS of the real command, in a child process."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        cmd = [sys.executable, "-m", "dreamlmc.cli", "train", "--prompt", prompt, "--out", str(out), "--quiet",
               "--device", device] + list(extra)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (not the max over all children)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
        peak_kib = usage.ru_maxrss
        ok = (out / "model.glb").exists()
    return {"command": "dreamlmc train --prompt '%s' --out RUN" % prompt + (" " + " ".join(extra) if extra else ""),
            "wall_s": wall, "peak_rss_gib": peak_kib / 1024 ** 2, "glb_written": ok}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--e2e", action="store_true", help="also time the whole default command (and its peak RSS)")
    ap.add_argument("--prompt", default="a red cube")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-compare", action="store_true",
                    help="on the CPU, skip the pure-PyTorch encoding run (by default both run, for their ratio)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    from dreamlmc.renderers.cpu_kernels import fused_available

    # the fused C++ encoding (the CPU default where it builds) and the pure-PyTorch path, in the same run
    variants = [("default", [])]
    if args.device == "cpu" and not args.no_compare and fused_available():
        variants = [("fused encoding (default)", []),
                    ("pure-PyTorch encoding", ["renderer.field.hash_grid.implementation=torch"])]
    info = machine()
    print(f"machine: {info}")
    result = {"machine": info, "device": args.device, "warmup": args.warmup, "repeats": args.repeats,
              "variants": {}}
    e2e_rows = []
    for name, extra in variants:
        rows, cfg = breakdown(args.device, args.warmup, args.repeats, list(args.overrides) + extra)
        print(f"\n{name}: built-in prior, {cfg.guidance.kind}, s = {cfg.guidance.guidance_scale}, "
              f"{cfg.renderer.num_samples} samples/ray, after {args.warmup} warm-up steps; medians of {args.repeats}")
        print(table(rows, ["phase", "ms", "it_per_s"]))
        result["variants"][name] = {"rows": rows}
        if args.e2e:
            r = e2e(args.device, args.prompt, list(args.overrides) + extra)
            r["variant"] = name
            e2e_rows.append(r)
            result["variants"][name]["e2e"] = r
    if len(variants) == 2:
        a, b = (result["variants"][n]["rows"] for n, _ in variants)
        step = {r["phase"]: r["ms"] for r in a}, {r["phase"]: r["ms"] for r in b}
        result["step_speedup"] = step[1]["step total"] / step[0]["step total"]
        result["render_fwd_bwd_speedup"] = ((step[1]["render forward"] + step[1]["backward"]) /
                                            (step[0]["render forward"] + step[0]["backward"]))
        print(f"\nwhole training step: {result['step_speedup']:.2f}x faster with the fused encoding; render forward + "
              f"backward {result['render_fwd_bwd_speedup']:.2f}x")
        if e2e_rows:
            result["e2e_speedup"] = e2e_rows[1]["wall_s"] / e2e_rows[0]["wall_s"]
    if e2e_rows:
        print(table(e2e_rows, ["variant"] + [k for k in e2e_rows[0] if k != "variant"]))
    path = write_json(f"speed_{args.device}", result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "bench_speed"))
