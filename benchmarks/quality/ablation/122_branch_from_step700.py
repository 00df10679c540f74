"""Rows 122-127: screen refinement variants from shared stage-1 states: the default trained to step STOP of its 1000-step
schedule (checkpointed, cached), then continued with refine.start = STOP/1000 and the variant's refine.* overrides.
Continuing from the full checkpoint is bit-identical to a run that had the refinement from the start. Paired
against row 116's runs of the default (the same first STOP steps: one thread per run).

    STOP=700 python 122_branch_from_step700.py OUT_DIR 0,1,2 refine.t_range=[0.1,0.3] ...

The rows' overrides (each row's JSON is its results.json):
    122 refine.t_range=[0.1,0.3]
    123 refine.t_range=[0.1,0.3] refine.sds_weight=0.25 refine.sparsity_factor=0.25
    124 refine.t_range=[0.1,0.3] refine.sds_weight=0.5 refine.sparsity_factor=0.5
    125 refine.t_range=[0.1,0.3] refine.sds_weight=1.0 refine.sparsity_factor=1.0
    126 refine.t_range=[0.05,0.2] refine.ddim_steps=2 refine.sds_weight=0.25 refine.sparsity_factor=0.25
    127 refine.t_range=[0.1,0.3] refine.volume_anchor=1000
Rows 145-146 (`144-146_refine_sds_scale/`) ran it with STAGE1_DIR and PROMPTS set, once with no overrides (the default
arm, at that session's default, before refine.sds_guidance_scale became 7.5) and once with
refine.sds_guidance_scale=7.5; their printed "default" column is row 116's (another machine), so the two arms were
paired with each other instead (`144-146_refine_sds_scale/pair.py`):
    STOP=700 STAGE1_DIR=DIR PROMPTS="a red cube,a yellow cone,..." python 122_branch_from_step700.py OUT 0,1,2 ...
"""
import json, os, signal, sys, shutil
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
import numpy as np
import torch

STOP = int(os.environ.get("STOP", 700))
STAGE1 = Path(os.environ.get("STAGE1_DIR", f"/tmp/dreamlmc_branch_stage1_{STOP}"))
PROMPTS = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a purple torus",
           "an orange pyramid", "a white cube", "a black sphere"]
KEYS = ("iou", "nearest", "chamfer", "normal_consistency", "extent_ratio", "delta_e", "hole")

def stage1(prompt, seed):
    from dreamlmc.trainer import Trainer, resolve_config
    from dreamlmc.runs import prepare_run_dir
    out = STAGE1 / f"{prompt.replace(' ', '-')}__seed{seed}"
    if (out / "STAGE1").exists():
        return out
    cfg = resolve_config([], [f"prompt={json.dumps(prompt)}", f"seed={seed}"])
    prepare_run_dir(out, force=True)
    class Stop(Trainer):
        def train_step(self):
            rec = super().train_step()
            if self.step == STOP:
                self._stop_signal = signal.SIGINT
            return rec
    tr = Stop(cfg, out, progress=False, log=lambda m: print(prompt, seed, m, flush=True))
    assert not tr.train() and tr.step == STOP, tr.step
    (out / "STAGE1").write_text("")
    return out

def job(a):
    prompt, seed, root, overrides = a
    torch.set_num_threads(1)
    from dreamlmc.trainer import Trainer, resolve_config
    from dreamlmc.runs import prepare_run_dir, run_training
    from dreamlmc.shapes.metrics import evaluate_run
    s1 = stage1(prompt, seed)
    out = Path(root) / f"{prompt.replace(' ', '-')}__seed{seed}"
    if not (out / "DONE").exists():
        cfg = resolve_config([], [f"prompt={json.dumps(prompt)}", f"seed={seed}", f"refine.start={STOP / 1000}"] + overrides)
        prepare_run_dir(out, force=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        shutil.copy(s1 / "checkpoints" / "last.safetensors", out / "checkpoints" / "last.safetensors")
        shutil.copy(s1 / "metrics.jsonl", out / "metrics.jsonl")
        from dreamlmc.config import dump_yaml
        dump_yaml(cfg, out / "config.yaml")
        run_training(cfg, out, quiet=True, resume=True)
    e = evaluate_run(out)
    return {"prompt": prompt, "seed": seed, **{k: e[k] for k in KEYS if k in e}}

if __name__ == "__main__":
    root = sys.argv[1]; seeds = [int(s) for s in sys.argv[2].split(",")]
    overrides = sys.argv[3:]
    prompts = os.environ.get("PROMPTS", ",".join(PROMPTS)).split(",")
    Path(root).mkdir(parents=True, exist_ok=True); STAGE1.mkdir(parents=True, exist_ok=True)
    (Path(root) / "overrides.txt").write_text(" ".join(overrides) + f" STOP={STOP}\n")
    base = json.load(open(ROOT / 'benchmarks/quality/ablation/116_default_reseeded_amd_8x3.json'))["runs"]
    ref = {(v["prompt"], v["seed"]): v for v in base.values()}
    jobs = [(p, s, root, overrides) for s in seeds for p in prompts]
    res = []
    with ProcessPoolExecutor(2) as ex:
        for r in ex.map(job, jobs):
            b = ref[(r["prompt"], r["seed"])]; r["base"] = {k: b[k] for k in KEYS if k in b}; res.append(r)
            print(f"{r['prompt']:18s} s{r['seed']} iou {r['iou']:.3f} (default {b['iou']:.3f}) nc {r['normal_consistency']:.3f} ({b['normal_consistency']:.3f}) {r['nearest']} ext {r.get('extent_ratio')}", flush=True)
    for m in ("iou", "normal_consistency", "chamfer"):
        d = np.array([r[m] - r["base"][m] for r in res])
        print(f"{m}: {np.mean([r[m] for r in res]):.3f} vs {np.mean([r['base'][m] for r in res]):.3f}; paired {d.mean():+.3f} ± {d.std(ddof=1)/np.sqrt(len(d)):.3f}")
    print("shape-correct", sum(r["nearest"] == r["prompt"].split()[-1] for r in res), "vs", sum(r["base"]["nearest"] == r["prompt"].split()[-1] for r in res))
    json.dump(res, open(Path(root) / "results.json", "w"), indent=1)
