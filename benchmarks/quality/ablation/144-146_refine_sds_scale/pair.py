"""Pair two branch.py arms (results.json lists): paired differences with SE over seeds, per-run lines."""
import json, sys, statistics as st
A = {(r["prompt"], r["seed"]): r for r in json.load(open(sys.argv[1]))}
B = {(r["prompt"], r["seed"]): r for r in json.load(open(sys.argv[2]))}
ks = sorted(set(A) & set(B))
seeds = sorted({k[1] for k in ks})
for m in ["iou", "normal_consistency", "chamfer", "delta_e"]:
    per = [st.mean([B[k][m] - A[k][m] for k in ks if k[1] == s]) for s in seeds]
    se = st.stdev(per) / len(per) ** .5 if len(per) > 1 else float("nan")
    print(f"{m:20s} {st.mean(A[k][m] for k in ks):.3f} -> {st.mean(B[k][m] for k in ks):.3f}  paired {st.mean(per):+.3f} ± {se:.3f}  n={len(ks)}")
sc = lambda D: sum(D[k]["nearest"] == k[0].split()[-1] for k in ks)
print("shape-correct", sc(A), "->", sc(B))
for k in ks:
    print(f"{k[0]:18s} s{k[1]} {A[k]['iou']:.3f} -> {B[k]['iou']:.3f}  {B[k]['nearest']:8s} ext {A[k].get('extent_ratio')} -> {B[k].get('extent_ratio')}")
