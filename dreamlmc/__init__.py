"""dreamlmc: text-to-3D with SDS and LMC-SDS guidance (arXiv 2401.05293), CPU-first.

Data flows one way: cameras -> renderer (dreamlmc.renderers) -> guidance (dreamlmc.guidance) -> optimiser step,
then the exporter. Optional accelerators (the fused CPU kernel, tiny-cuda-nn) are probed where used, never here.
"""
__version__ = "0.1.0"
