"""The corrective k_psi's regression loss on held-out data: how well each k_psi reproduces the denoiser's
corruption x_hat(x, t) = E[one-step denoise of α_t x + σ_t ε] on two pools it was not trained on — fresh samples of
the prior (another seed) and renders of 3D runs (e.g. from tools/render_views.py) — with the same t and ε draws
for every k_psi, and the identity (k_psi(x) = x, i.e. plain SDS's projection) as the reference (issue 14).

    python tools/bench_corrective.py --corrective shipped=builtin wide=/path/k.safetensors \\
        --renders DIR [--per-prompt 2] [--draws 8]

A k_psi is NAME=PATH (a .safetensors k_psi, "builtin" for the shipped one, or a training checkpoint
*.ckpt.safetensors, read at the step it holds). Prints a table and writes benchmarks/corrective.json."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dreamlmc.errors import DreamlmcError  # noqa: E402
from tools.benchutil import RESULTS, machine, run_cli, table, write_json  # noqa: E402


def load_any(spec: str, backend):
    """NAME=PATH -> (name, net, note)."""
    from dreamlmc.guidance.corrective import Corrective, load_corrective

    name, _, path = spec.partition("=")
    if not name or not path:
        raise DreamlmcError(f"--corrective takes NAME=PATH, got {spec!r}")
    if path == "builtin":
        path = backend.default_corrective()
        if path is None:
            raise DreamlmcError("no shipped k_psi in this installation (assets/builtin_corrective.safetensors)")
    if path.endswith(".ckpt.safetensors"):
        from dreamlmc.checkpoint import load_state

        state = load_state(Path(path))
        net_state, cfg = state["net"], state.get("config")
        if cfg is None:  # a checkpoint from before corrective training stored its net's config
            cfg = {"hidden": net_state["inp.bias"].shape[0],
                   "layers": 2 + len({k.split(".")[1] for k in net_state if k.startswith("mid.")})}  # in, mid.., out
        net = Corrective(**{"channels": backend.latent_shape[0], **cfg})
        net.load_state_dict(net_state)
        hidden, layers = net.config["hidden"], net.config["layers"]
        return name, net.eval(), f"checkpoint at step {int(state['step'])}, hidden {hidden}, {layers} layers"
    net, card = load_corrective(Path(path), expect_model_id=backend.model_id)
    cfg = card.get("config", {})
    return name, net.eval(), (f"{card.get('steps')} steps on {card.get('source')}, hidden {cfg.get('hidden')}, "
                              f"{cfg.get('layers')} layers")


@torch.no_grad()
def regression_loss(backend, nets, pool, draws: int, seed: int, t_range=(0.02, 0.98), chunk: int = 32):
    """Mean ‖k(x, t) − x_hat‖² per k (and the identity) over the pool × draws, with shared t and ε."""
    from dreamlmc.guidance.corrective_train import one_step_denoise

    g = torch.Generator().manual_seed(seed)
    T = backend.num_train_timesteps
    lo, hi = int(t_range[0] * T), min(T - 1, int(t_range[1] * T))
    sums = {name: 0.0 for name in ["identity"] + list(nets)}
    count = 0
    x_all, prompts = pool["x"], pool["prompts"]
    for _ in range(draws):
        for i in range(0, len(x_all), chunk):
            x = x_all[i:i + chunk].to(backend.device)
            t = torch.randint(lo, hi + 1, (len(x),), generator=g).to(backend.device)
            eps = torch.randn(x.shape, generator=g).to(backend.device)
            x_hat = one_step_denoise(backend, x, t, eps, backend.encode_prompts(prompts[i:i + chunk])).float()
            sums["identity"] += float(((x - x_hat) ** 2).mean()) * len(x)
            for name, net in nets.items():
                sums[name] += float(((net(x, t.float() / T) - x_hat) ** 2).mean()) * len(x)
            count += len(x)
    return {k: v / count for k, v in sums.items()}


def main(argv=None) -> int:
    """A bad input (a path, a NAME=PATH, a prompt the prior cannot take) is one line and exit status 2."""
    return run_cli(lambda: _bench(argv), "bench_corrective")


def _bench(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corrective", nargs="+", required=True, metavar="NAME=PATH")
    ap.add_argument("--renders", type=Path, help="a folder of 3D renders (with prompts.json) as a second pool")
    ap.add_argument("--per-prompt", type=int, default=2, help="fresh prior samples per prompt")
    ap.add_argument("--prompts", nargs="+", help="prompts of the prior samples (default: all 48 of the world)")
    ap.add_argument("--draws", type=int, default=8, help="(t, ε) draws per image")
    ap.add_argument("--seed", type=int, default=7, help="seed of the prior samples and of t, ε (training used 0)")
    ap.add_argument("--out", type=Path, default=RESULTS / "corrective.json")
    args = ap.parse_args(argv)
    if args.draws < 1 or args.per_prompt < 1:
        raise DreamlmcError("--draws and --per-prompt must be >= 1")
    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.corrective_train import folder_pool, sample_pool

    torch.manual_seed(0)
    t0 = time.time()
    be = load_backend("builtin")
    nets, notes = {}, {}
    for spec in args.corrective:
        name, net, note = load_any(spec, be)
        nets[name], notes[name] = net, note
    g = be.world().grammar
    prompts = args.prompts or [g.prompt_for(c, s) for c in g.COLOURS for s in g.SHAPES]
    for p in prompts:
        be.check_prompt(p)
    pools = {"prior samples": sample_pool(be, prompts, args.per_prompt, 3.0, 25, args.seed, progress=False)}
    if args.renders:
        pools["3D renders"] = folder_pool(be, args.renders)
    losses = {pool: regression_loss(be, nets, p, args.draws, args.seed) for pool, p in pools.items()}
    rows = [{"k_psi": name, "trained": notes.get(name, "k(x) = x"),
             **{f"loss on {pool}": f"{losses[pool][name]:.5f}" for pool in pools}}
            for name in ["identity"] + list(nets)]
    print(table(rows, list(rows[0])))
    write_json("corrective", {"machine": machine(), "pools": {k: len(v["x"]) for k, v in pools.items()},
                          "draws": args.draws, "seed": args.seed, "notes": notes, "losses": losses,
                          "renders": str(args.renders) if args.renders else None, "seconds": time.time() - t0},
               out=args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
