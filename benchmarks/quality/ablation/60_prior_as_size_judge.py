"""Can the prior judge a run's size? For each stored run, render 8 views at object scale s (camera at radius 2.3/s,
fovy 52.5, light at the camera), and score each s by the prior's conditional denoising error (fixed eps and t across
scales). Compare argmin s with the oracle's best scale (row 56) and score the IoU at the chosen scale."""
import json, sys
from pathlib import Path
import numpy as np, torch
from dreamlmc.shapes import world
from dreamlmc.shapes.metrics import load_run, run_solid, best_yaw_iou
from dreamlmc.cameras import _make_batch, spherical_to_position, view_label
from dreamlmc.guidance.backends.builtin import BuiltinBackend
from dreamlmc.guidance.diffusion import coefficients, add_noise
torch.set_num_threads(1)
# usage: python 60_prior_as_size_judge.py RESULTS.json ORACLE.json (row 56's output) OUT.json FIXEDCAM_PRIOR
# (row 57's weights: git show 51a49c8:benchmarks/quality/ablation/57_prior_fixed_camera.safetensors > prior.safetensors)
res = json.load(open(sys.argv[1])); oracle = json.load(open(sys.argv[2])); outp = sys.argv[3]
priors = {"shipped": BuiltinBackend(), "fixedcam": BuiltinBackend(sys.argv[4])}
SC = [0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2]
TS = torch.tensor([100, 200, 300, 400, 500, 600, 700, 800])
n, el, R0, FOV = 8, 15.0, 2.3, 52.5
out = {}
for key, r in res["runs"].items():
    run = Path("/root/.cache/dreamlmc/sweep") / key
    tr = load_run(run); cfg = tr.cfg
    shape = world.parse_prompt(cfg.prompt)["shape"]
    az = torch.arange(n, dtype=torch.float32) * (360.0 / n) + 22.5
    az = (az + 180.0) % 360.0 - 180.0
    prompts = [f"{cfg.prompt}, {view_label(el, float(a))} view" for a in az]
    imgs = []
    tr.renderer.eval(); tr.renderer.set_progress(1.0)
    with torch.no_grad():
        for s in SC:
            e = torch.full((n,), el); rr = torch.full((n,), R0 / s); fv = torch.full((n,), FOV)
            eye = spherical_to_position(e, az, rr)
            cams = _make_batch(e, az, rr, fv, torch.zeros(n, 3), eye.clone(), 32, 32)
            imgs.append(tr.renderer(cams, ("lambertian",), perturb=False, chunk=1)["rgb"])
    row = {"prompt": cfg.prompt, "seed": r["seed"], "iou": r["iou"], "oracle_s": oracle[key]["best_s"],
           "oracle": oracle[key]["best"]}
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(len(TS), n, 3, 32, 32, generator=g)
    for name, be in priors.items():
        cond = be.encode_prompts(prompts); unc = be.encode_prompts([""] * n)
        errs = []; errs_c = []; errs_u = []
        with torch.no_grad():
            for im in imgs:
                x = be.encode_images(im)
                e_tot = 0.0; ec = 0.0; eu = 0.0
                for i, t in enumerate(TS):
                    tt = torch.full((n,), int(t))
                    a, sg = coefficients(be.alphas_cumprod, tt)
                    xt = add_noise(x, a, sg, eps[i])
                    pred, pu = be.predict_noise(xt, tt, cond, unc)
                    ec += float(((pred - eps[i]) ** 2).mean()); eu += float(((pu - eps[i]) ** 2).mean())
                errs_c.append(ec / len(TS)); errs_u.append(eu / len(TS)); errs.append(-(eu - ec) / eu)
        row[name] = dict(zip(map(str, SC), errs)); row[name + "_c"] = errs_c; row[name + "_u"] = errs_u
        row[name + "_s"] = SC[int(np.argmin(errs))]
    inside = run_solid(tr)
    for name in priors:
        s = row[name + "_s"]
        row[name + "_iou"] = best_yaw_iou(lambda p: inside(p / s), shape, n=30_000, yaw_step=10.0)[0]
    out[key] = row
    print(f"{cfg.prompt:18s} {r['seed']} iou {r['iou']:.3f} oracle s {row['oracle_s']} {row['oracle']:.3f} | "
          f"shipped s {row['shipped_s']} {row['shipped_iou']:.3f} | fixedcam s {row['fixedcam_s']} {row['fixedcam_iou']:.3f}", flush=True)
    json.dump(out, open(outp, "w"), indent=1)
a = np.array([[v["iou"], v["oracle"], v["shipped_iou"], v["fixedcam_iou"]] for v in out.values()])
print("mean iou %.3f oracle %.3f shipped-judge %.3f fixedcam-judge %.3f" % tuple(a.mean(0)))
