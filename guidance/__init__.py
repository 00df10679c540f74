"""Score distillation guidance (SDS, LMC-SDS), noise, diffusion backends, the corrective k_psi.

Never imports the renderer: it sees images as plain tensors (B, 3, H, W) in [0, 1].
"""
