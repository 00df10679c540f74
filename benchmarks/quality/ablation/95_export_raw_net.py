"""Export the raw (non-EMA) net of a train_prior checkpoint as a prior file (diagnostic for README row 95).
    python 95_export_raw_net.py WORKDIR/last.safetensors REFERENCE_PRIOR.safetensors OUT.safetensors"""
import json, sys
from pathlib import Path
from dreamlmc.checkpoint import load_state
from dreamlmc.shapes.prior import PriorNet, load_prior, save_prior
ckpt, ref, out = sys.argv[1:4]
state = load_state(Path(ckpt))
net = PriorNet(); net.load_state_dict(state["net"])
_, card = load_prior(ref)
card = dict(card, steps=int(state["step"]), ema_decay=None, note="raw net weights, no EMA (diagnostic)")
save_prior(net, Path(out), card)
print("wrote", out, state["step"])
