"""The image-to-image translation network on the built-in world, measured on held-out images.

    python tools/bench_translate.py            # ~4 min on the 2-core CPU (2 trainings of 300 steps)

Task: recolour objects to the target prompt's colour while keeping their shape and pose. Sources are ground-truth
renders of three colours of one shape (seed 0); evaluation uses new renders (seed 1) of the same prompts and of a
shape the network never saw. Measured per method (SDS, LMC-SDS): share of object pixels whose hue is nearest the
target colour's, before and after; silhouette IoU between input and output (layout kept); and mean |output − input|
on the white background (should stay ~0).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from tools.benchutil import machine, table, write_json  # noqa: E402


def hue_share(imgs: torch.Tensor, mask: torch.Tensor, target_rgb, others) -> float:
    """Share of object pixels whose chromaticity is closer to the target colour than to any other."""
    rgb = imgs.permute(0, 2, 3, 1)[mask]
    chroma = rgb / rgb.sum(-1, keepdim=True).clamp_min(1e-3)

    def c(col):
        t = torch.tensor(col, dtype=torch.float32)
        return t / t.sum().clamp_min(1e-3)

    d_target = (chroma - c(target_rgb)).norm(dim=-1)
    d_other = torch.stack([(chroma - c(o)).norm(dim=-1) for o in others]).min(0).values
    return float((d_target < d_other).float().mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="red")
    ap.add_argument("--shape", default="cube")
    ap.add_argument("--unseen-shape", default="cylinder")
    ap.add_argument("--sources", nargs="+", default=["blue", "green", "yellow"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default=None)
    ap.add_argument("--figure", default=None, help="PNG: held-out inputs, then one row of outputs per method")
    args = ap.parse_args(argv)

    from dreamlmc.shapes.data import ground_truth_renders as world_sources
    from dreamlmc.translate import TranslateConfig, load_translation, train_translation
    from dreamlmc.shapes.world import COLOURS, prompt_for

    target = COLOURS[args.target]
    chromatic = [v for k, v in COLOURS.items() if k not in ("white", "black", args.target)]
    held = {
        "seen shape": world_sources([prompt_for(c, args.shape) for c in args.sources], 8, 32, seed=1),
        "unseen shape": world_sources([prompt_for(c, args.unseen_shape) for c in args.sources], 8, 32, seed=1),
    }
    rows, figure_rows = [], [torch.cat([torch.cat(list(v[::8]), -1) for v in held.values()], -1)]
    work = Path.home() / ".cache/dreamlmc/bench_translate"
    for kind in ("sds", "lmc-sds"):
        out = work / f"{kind}.safetensors"
        cfg = TranslateConfig(prompt=prompt_for(args.target, args.shape),
                              source_prompts=tuple(prompt_for(c, args.shape) for c in args.sources),
                              steps=args.steps, guidance=kind)
        t0 = time.time()
        train_translation(cfg, out, progress=True)
        secs = time.time() - t0
        net, _ = load_translation(str(out))
        outs = []
        for name, x in held.items():
            with torch.no_grad():
                y = net(x)
            outs.append(torch.cat(list(y[::8]), -1))
            fg_in, fg_out = (x < 0.9).any(1), (y < 0.9).any(1)
            iou = float((fg_in & fg_out).sum() / (fg_in | fg_out).sum())
            rows.append({"method": kind, "images": name, "target_hue_before": hue_share(x, fg_in, target, chromatic),
                         "target_hue_after": hue_share(y, fg_out, target, chromatic), "silhouette_iou": iou,
                         "background_change": float((y - x).abs().permute(0, 2, 3, 1)[~fg_in].mean()),
                         "train_s": secs})
        figure_rows.append(torch.cat(outs, -1))
    cols = ["method", "images", "target_hue_before", "target_hue_after", "silhouette_iou", "background_change",
            "train_s"]
    print(f"\nmachine: {machine()}; {args.steps} steps, sources {args.sources} {args.shape}s -> {args.target}")
    print(table(rows, cols))
    path = write_json("translate", {"machine": machine(), "rows": rows, "args": vars(args)}, args.out)
    print(f"wrote {path}")
    if args.figure:
        from dreamlmc.media import save_png

        fig = torch.cat(figure_rows, -2)
        save_png(torch.nn.functional.interpolate(fig[None], scale_factor=3, mode="nearest")[0], Path(args.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
