"""The built-in world: six shapes in eight colours with known ground truth.

Everything of the toy world lives here: geometry and ground truth (world), its analytic renderer (render), the prior's
data set (data), the prior's network and sampler (prior), the classifier that judges the prior (classifier), the
metrics that need ground truth (metrics) and ground-truth sources for the translation network (sources). The core
and the guidance never import it, except through the built-in backend (guidance/backends/builtin.py).
"""
