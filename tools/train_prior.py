"""Train the built-in prior from scratch on the shapes data set (a one-off, seeded, on the CPU).

    python tools/make_shapes_data.py                       # ~2 min, writes ~/.cache/dreamlmc/shapes32.npz
    nohup python tools/train_prior.py --minutes 170 &      # resumable: run it again to continue
    python tools/train_prior.py --export dreamlmc/assets/builtin_prior.safetensors   # ship the EMA weights

Choices (see dreamlmc/shapes/prior.py for the network): ε-prediction on a cosine DDPM schedule with min-SNR-5 loss
weighting; AdamW with a linear warm-up; bf16 autocast; EMA of the weights (samples and the shipped file use it);
caption dropout (whole prompt 10 %, colour or shape 10 % each, view 50 %) so that classifier-free guidance and
partial prompts work. --ground-words captions each image on a grey ground "..., on grey" (a fifth token, never
dropped), so that a prompt without it means the white ground and "on grey" alone is a grey view's unconditional. Checkpoints (every few minutes, atomically, and on SIGTERM/SIGINT) and a sample grid go to
--workdir, outside the work tree.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dreamlmc.cameras import CameraConfig, view_label
from dreamlmc.checkpoint import load_optimizer_state, load_state, optimizer_state, save_state
from dreamlmc.shapes.prior import (BOS, GROUND_SEQ_LEN, PAD, TOKEN_ID, PriorNet, load_prior, make_scheduler, sample,
                                   save_prior)
from dreamlmc.shapes.world import COLOURS, GREY_RANGE, GROUNDS, SHAPES, VIEWS, prompt_for

DEFAULT_WORKDIR = Path.home() / ".cache/dreamlmc/prior_train"
GRID_PROMPTS = [prompt_for(c, s) for c, s in [("red", "cube"), ("blue", "sphere"), ("green", "cylinder"),
                                                 ("yellow", "cone"), ("purple", "torus"), ("orange", "pyramid"),
                                                 ("white", "cube"), ("black", "torus")]]


def load_data(path: Path, fine_views: bool = False):
    d = np.load(path)
    images = torch.from_numpy(d["images"]).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, R, R)
    colours = torch.from_numpy(d["colour"])
    shapes = torch.from_numpy(d["shape"])
    views = torch.tensor([VIEWS.index(view_label(float(e), float(a), fine=fine_views))
                          for e, a in zip(d["elevation"], d["azimuth"])])
    return images, colours, shapes, views, int(d["seed"])


def grey_grounds(path: Path) -> torch.Tensor:
    """(N,) bool: which images of a data set lie on a non-white ground (its per-image background colours)."""
    with np.load(path) as d:
        if "background" not in d:
            return torch.zeros(len(d["colour"]), dtype=torch.bool)
        return torch.from_numpy(d["background"].min(axis=1) < 0.999)


def batch_tokens(colours, shapes, views, g: torch.Generator, grey=None) -> torch.Tensor:
    """Token ids with caption dropout: whole 10 %, colour 10 %, shape 10 % (never both), view 50 %. grey (B,) bool:
    a fifth token, the ground word on a grey ground and PAD on white, never dropped (ground words)."""
    B = len(colours)
    c_ids = torch.tensor([TOKEN_ID[list(COLOURS)[int(c)]] for c in colours])
    s_ids = torch.tensor([TOKEN_ID[SHAPES[int(s)]] for s in shapes])
    v_ids = torch.tensor([TOKEN_ID[VIEWS[int(v)]] for v in views])
    u = torch.rand(B, 4, generator=g)
    drop_all = u[:, 0] < 0.1
    drop_c = (u[:, 1] < 0.1) & ~drop_all
    drop_s = (u[:, 1] >= 0.1) & (u[:, 1] < 0.2) & ~drop_all
    drop_v = u[:, 2] < 0.5
    c_ids = torch.where(drop_all | drop_c, PAD, c_ids)
    s_ids = torch.where(drop_all | drop_s, PAD, s_ids)
    v_ids = torch.where(drop_all | drop_v, PAD, v_ids)
    cols = [torch.full((B,), BOS), c_ids, s_ids, v_ids]
    if grey is not None:
        cols.append(torch.where(grey, TOKEN_ID[GROUNDS[0]], PAD))
    return torch.stack(cols, dim=1)


def save_grid(images: torch.Tensor, rows: int, path: Path) -> None:
    from PIL import Image

    n, _, h, w = images.shape
    cols = math.ceil(n / rows)
    grid = torch.ones(3, rows * h, cols * w)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    arr = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(arr).resize((cols * w * 3, rows * h * 3), Image.NEAREST).save(path)


def _training_command(workdir: Path) -> str:
    """The commands that reproduce a workdir's weights (a fine-tune names its start, data and learning rate)."""
    init, data = (workdir / "init.json", workdir / "data.json")
    if not init.exists():
        return "python tools/make_shapes_data.py && python tools/train_prior.py"
    init, data = json.loads(init.read_text()), (json.loads(data.read_text()) if data.exists() else {})
    make = "python tools/make_shapes_data.py"
    train = f"python tools/train_prior.py --init-weights {init['weights']}"
    extra = ""  # data other than the default file's
    if data.get("white_fraction", 1.0) < 1.0:
        extra += f" --white-fraction {data['white_fraction']:g}"
    if data.get("white_fraction", 1.0) < 1.0 or data.get("grey_colours"):
        if "grey_range" in data and tuple(data["grey_range"]) != tuple(GREY_RANGE):
            extra += " --grey-range {:g} {:g}".format(*data["grey_range"])
    if data.get("grey_colours"):
        extra += " --grey-colours " + " ".join(data["grey_colours"])
    for key, flag in (("radius_range", "--radius"), ("fovy_range", "--fovy")):
        lo, hi = data.get(key, getattr(CameraConfig(), key))
        if lo == hi:  # make_shapes_data's one-camera option (its default is the trainer's random range)
            extra += f" {flag} {lo:g}"
    if "elevation_range" in data and tuple(data["elevation_range"]) != tuple(CameraConfig().elevation_range):
        extra += " --elevation {:g} {:g}".format(*data["elevation_range"])
    if extra:
        make += f"{extra} --out DATA"
        train += " --data DATA"
    for key in ("lr", "warmup"):
        if key in data:
            train += f" --{key} {data[key]:g}"
    if data.get("precision", "bf16") != "bf16":
        train += f" --precision {data['precision']}"
    if data.get("ema", 0.999) != 0.999:
        train += f" --ema {data['ema']:g}"
    if data.get("view_bins_deg", 90) == 45:
        train += " --fine-views"
    if data.get("ground_words"):
        train += " --ground-words"
    return f"{make} && {train}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache/dreamlmc/shapes32.npz")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--minutes", type=float, default=60.0, help="stop after this much wall time (this invocation)")
    ap.add_argument("--max-steps", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                    help="autocast of the forward pass: bf16 (default) or fp32, ~3x faster on a CPU without bf16 "
                         "instructions (a 2-core Xeon with AVX-512 but no AVX512_BF16: 1.4 against 4.4 s per step)")
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--grid-every", type=int, default=1000)
    ap.add_argument("--export", type=Path, default=None, help="write the EMA weights (fp16) + card and exit")
    ap.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to read (default: workdir/last.safetensors)")
    ap.add_argument("--save-resumable", type=Path, default=None,
                    help="write net + EMA weights (fp32 safetensors, no optimiser state) and exit: a compact "
                         "checkpoint that can be committed when a session ends before training does")
    ap.add_argument("--resume-from", type=Path, default=None,
                    help="start from such a compact checkpoint (the optimiser restarts with its warm-up)")
    ap.add_argument("--init-weights", type=Path, default=None,
                    help="fine-tune: start net and EMA from a shipped prior file (e.g. "
                         "dreamlmc/assets/builtin_prior.safetensors) at its card's step; the optimiser warms up again")
    ap.add_argument("--fine-views", action="store_true",
                    help="caption each image with 45° view words (front / three-quarter / side / back) instead of "
                         "DreamFusion's 90° ones; train with camera.fine_views=true")
    ap.add_argument("--ground-words", action="store_true",
                    help="caption images on a grey ground '..., on grey' (a fifth token, never dropped): the prompt "
                         "then says which ground a view has, and 'on grey' alone is its unconditional")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.checkpoint or (args.workdir / "last.safetensors")  # resumable state (dreamlmc.checkpoint)
    torch.manual_seed(args.seed)
    if not args.export and not args.save_resumable:  # a workdir trains one kind of caption
        done = args.workdir / "data.json"
        if done.exists() and bool(json.loads(done.read_text()).get("ground_words")) != args.ground_words:
            raise SystemExit(f"{args.workdir} was trained {'with' if not args.ground_words else 'without'} "
                             "--ground-words; use the same flag or another --workdir")
    ground_words = args.ground_words or (args.workdir / "data.json").exists() and bool(
        json.loads((args.workdir / "data.json").read_text()).get("ground_words"))
    net = PriorNet({"seq_len": GROUND_SEQ_LEN} if ground_words else None)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    step = 0
    warm_start = 0
    if ckpt_path.exists():
        state = load_state(ckpt_path)
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        load_optimizer_state(opt, state["opt"])
        g.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)
    elif args.resume_from:
        from safetensors.torch import load_file

        flat = load_file(str(args.resume_from))
        net.load_state_dict({k[4:]: v for k, v in flat.items() if k.startswith("net.")})
        ema.load_state_dict({k[4:]: v for k, v in flat.items() if k.startswith("ema.")})
        step = int(json.loads(args.resume_from.with_suffix(".json").read_text())["step"])
        warm_start = step  # the fresh optimiser warms up again
        print(f"started from {args.resume_from} at step {step}", file=sys.stderr)
    elif args.init_weights:
        shipped, card = load_prior(args.init_weights)
        if {**shipped.cfg, "seq_len": 0} != {**net.cfg, "seq_len": 0}:  # a ground slot may be added
            raise SystemExit(f"--init-weights: {args.init_weights} has another network config than PriorNet()")
        net.load_state_dict(shipped.state_dict())
        ema.load_state_dict(shipped.state_dict())
        step = warm_start = int(card.get("steps", 0))
        fine_tune_from = {"weights": str(args.init_weights), "steps": step, "final_loss": card.get("final_loss")}
        (args.workdir / "init.json").write_text(json.dumps(fine_tune_from))
        print(f"fine-tuning {args.init_weights} from step {step}", file=sys.stderr)

    if args.save_resumable:
        from safetensors.torch import save_file

        flat = {f"net.{k}": v.float().contiguous() for k, v in net.state_dict().items()}
        flat.update({f"ema.{k}": v.float().contiguous() for k, v in ema.state_dict().items()})
        save_file(flat, str(args.save_resumable))
        args.save_resumable.with_suffix(".json").write_text(json.dumps({"step": step, "seed": args.seed}))
        print(f"wrote compact checkpoint at step {step} to {args.save_resumable}")
        return 0

    if args.export:
        from dreamlmc.shapes.prior import TOKENS

        grammar = "a|an {colour} {shape}[, {view} view]" + ("[, on grey]" if ground_words else "")
        card = {"training_command": _training_command(args.workdir),
                "vocabulary": [t for t in TOKENS if ground_words or t not in GROUNDS], "prompt_grammar": grammar,
                "data_seed": args.seed, "steps": step, "batch_size": args.batch_size,
                "lr_segments": _lr_segments(args.workdir, step),
                "final_loss": _last_loss(args.workdir), "ema_decay": args.ema,
                "guidance_convention": "eps_u + s * (eps_c - eps_u); s = 1 is purely conditional"}
        for name in ("init", "data"):  # a fine-tune records what it started from and what it saw
            f = args.workdir / f"{name}.json"
            if f.exists():
                card["fine_tuned_from" if name == "init" else "data"] = json.loads(f.read_text())
        if card.get("data", {}).get("view_bins_deg", 90) != 45:  # never captioned "three-quarter": the backend
            card["vocabulary"] = [t for t in card["vocabulary"] if t != "three-quarter"]  # then refuses that word instead of
            # using an untrained embedding (it checks prompts against the card's words by name)
        card["ema_decay"] = card.get("data", {}).get("ema", args.ema)  # the training's, not this export call's
        save_prior(ema, args.export, card)
        print(f"exported EMA weights at step {step} to {args.export}")
        return 0

    images, colours, shapes, views, data_seed = load_data(args.data, args.fine_views)
    grey = grey_grounds(args.data) if ground_words else None
    with np.load(args.data) as d:
        white = float(d["white_fraction"]) if "white_fraction" in d else 1.0
        keyed = ({"grey_colours": [str(c) for c in d["grey_colours"]]}
                 if "grey_colours" in d and len(d["grey_colours"]) else {})
        cams = {k: [round(float(v), 4) for v in d[k]]
                for k in ("radius_range", "fovy_range", "elevation_range", "grey_range") if k in d}
    (args.workdir / "data.json").write_text(json.dumps({"path": str(args.data), "images": len(images),
                                                        "seed": data_seed, "white_fraction": white, **cams,
                                                        **keyed,
                                                        "lr": args.lr, "warmup": args.warmup,
                                                        "precision": args.precision, "ema": args.ema,
                                                        "view_bins_deg": 45 if args.fine_views else 90,
                                                        **({"ground_words": True} if ground_words else {})}))
    sched = make_scheduler(net.cfg)
    alphas_cumprod = sched.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = torch.clamp(snr, max=args.snr_gamma) / snr  # min-SNR-γ for ε-prediction
    n = len(images)

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def checkpoint():
        save_state(ckpt_path, {"net": net.state_dict(), "ema": ema.state_dict(), "opt": optimizer_state(opt),
                               "generator": g.get_state(), "torch_rng": torch.get_rng_state(), "step": step,
                               "data_seed": int(data_seed)})

    t_start = last_ckpt = time.time()
    logf = open(args.workdir / "log.jsonl", "a")
    running = None
    net.train()
    while step < args.max_steps and not stop["flag"] and time.time() - t_start < args.minutes * 60:
        idx = torch.randint(0, n, (args.batch_size,), generator=g)
        x0 = images[idx].float() / 127.5 - 1.0
        flip = torch.rand(args.batch_size, generator=g) < 0.5  # mirror images are views of the same world
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        ids = batch_tokens(colours[idx], shapes[idx], views[idx], g, None if grey is None else grey[idx])
        t = torch.randint(0, len(alphas_cumprod), (args.batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = alphas_cumprod[t].sqrt()[:, None, None, None]
        s = (1 - alphas_cumprod[t]).sqrt()[:, None, None, None]
        x_t = a * x0 + s * noise
        lr = args.lr * min(1.0, (step + 1 - warm_start) / args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            pred = net(x_t, t, ids)
        per = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (weights[t] * per).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        m = float(per.detach().mean())
        running = m if running is None else 0.99 * running + 0.01 * m
        if step % 50 == 0:
            rec = {"step": step, "loss": float(loss.detach()), "mse": running, "lr": lr, "time": time.time()}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if step % args.grid_every == 0:
            gen = torch.Generator().manual_seed(1234)
            rows = [sample(ema, GRID_PROMPTS, guidance_scale=s_, steps=25, generator=gen) for s_ in (1.0, 3.0, 7.5)]
            save_grid(torch.cat(rows), 3, args.workdir / f"samples_{step:06d}.png")
        if time.time() - last_ckpt > args.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    print(f"stopped at step {step} (running mse {running})", file=sys.stderr)
    return 0


def _lr_segments(workdir: Path, upto: int):
    """[(first step, lr), ...] as actually trained (later records of a resumed run replace earlier ones)."""
    log = workdir / "log.jsonl"
    if not log.exists():
        return []
    by_step = {}
    for line in log.read_text().strip().splitlines():
        rec = json.loads(line)
        if rec["step"] <= upto:
            by_step[rec["step"]] = rec["lr"]
    segs = []
    for st in sorted(by_step):
        if not segs or abs(segs[-1][1] - by_step[st]) > 1e-12:
            segs.append([st, by_step[st]])
    return segs


def _last_loss(workdir: Path):
    log = workdir / "log.jsonl"
    if not log.exists():
        return None
    lines = log.read_text().strip().splitlines()
    return json.loads(lines[-1]).get("mse") if lines else None


if __name__ == "__main__":
    import sys

    sys.path.append(__file__.rsplit("/tools/", 1)[0])
    from tools.benchutil import run_cli

    raise SystemExit(run_cli(main, "train_prior"))
