"""Diffusion priors behind one interface (see base.py)."""
