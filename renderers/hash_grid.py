"""Multi-resolution hash encoding (instant-NGP), pure PyTorch, with tiny-cuda-nn used when present on CUDA.

Index conventions follow tiny-cuda-nn's HashGrid so that both paths lay out the same table:
level l has scale s_l = base_resolution * growth_factor**l - 1 and resolution ceil(s_l) + 1; a point x in [0, 1]^3
maps to x * s_l + 0.5; a level whose resolution**3 fits in the table is indexed densely (x + y r + z r^2), larger
levels by the spatial hash (x * 1) ^ (y * 2654435761) ^ (z * 805459861) modulo the table size.

`reference_encode` is the straightforward level-by-level, corner-by-corner gather, kept for the benchmark and for
tests; the fast path is described in HashEncoding.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import List, Literal, Optional

import torch
import torch.nn as nn
from dreamlmc.config import spec

PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig:
    # CPU defaults for the built-in prior's 32x32 renders: resolutions 8, 11, 16, 22, 32 cells across the bounding
    # box, all dense. Measured on "a red cube" (1000 steps): levels up to 89 cells left sub-pixel speckle in 96 px
    # previews that the 32 px guidance cannot see, and cost 146 s against 106 s for these. GPU presets use 16
    # levels up to 2048 with a hashed table (configs/).
    num_levels: int = spec(5, ge=1, le=32)
    features_per_level: int = spec(2, ge=1, le=8)
    log2_table_size: int = spec(19, ge=4, le=24)
    base_resolution: int = spec(8, ge=2, le=4096)
    growth_factor: float = spec(1.41, ge=1.0, le=4.0)
    init_scale: float = spec(1e-4, ge=0.0, le=1.0)
    # "auto": the fused C++ kernel on the CPU where it builds (renderers/cpu_kernels.py), tiny-cuda-nn on CUDA where
    # importable, else pure PyTorch; "torch": always the pure-PyTorch path (the reference the others are tested
    # against); "tcnn": tiny-cuda-nn, required (an error where it cannot be imported)
    implementation: Literal["auto", "torch", "tcnn"] = "auto"


def level_layout(cfg: HashGridConfig):
    """Per level: (scale, resolution, table rows, dense?). Rows are rounded up to a multiple of 8 like tcnn."""
    out = []
    table = 2 ** cfg.log2_table_size
    for level in range(cfg.num_levels):
        scale = cfg.base_resolution * cfg.growth_factor ** level - 1.0
        res = int(math.ceil(scale)) + 1
        dense_rows = (res ** 3 + 7) // 8 * 8
        rows = min(dense_rows, table)
        out.append((scale, res, rows, dense_rows <= table))
    return out


def _corner_offsets(device) -> torch.Tensor:
    return torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], device=device)


class HashEncoding(nn.Module):
    """x (N, 3) in [0, 1]^3 -> features (N, num_levels * features_per_level), level-major.

    Parameters are one tensor per level: dense levels as (1, F, r, r, r) volumes (index x + y r + z r^2, so the
    flat row order is tiny-cuda-nn's), hashed levels as (rows, F) tables. On the CPU every level runs through one
    fused C++ kernel (renderers/cpu_kernels.py) where it builds; the pure-PyTorch path runs dense levels through
    grid_sample and hashed levels through one vectorised gather. Dense corners outside the grid are clamped to its
    border (tcnn wraps them into the table; that only concerns points within half a cell of the box's upper faces).
    """

    def __init__(self, cfg: HashGridConfig = HashGridConfig(), device=None):
        super().__init__()
        self.cfg = cfg
        self.layout = level_layout(cfg)
        F = cfg.features_per_level
        self.output_dim = cfg.num_levels * F
        levels = []
        for scale, res, rows, dense in self.layout:
            shape = (1, F, res, res, res) if dense else (rows, F)
            levels.append(nn.Parameter(torch.empty(shape).uniform_(-cfg.init_scale, cfg.init_scale)))
        self.register_buffer("corners", _corner_offsets("cpu"), persistent=False)
        self._primes32 = [p - 2 ** 32 if p >= 2 ** 31 else p for p in PRIMES]  # int32 bit patterns
        self._hash_mask = 2 ** cfg.log2_table_size - 1
        # tiny-cuda-nn, built here (not at the first forward) so that the optimiser, state_dict, resume and export
        # all see its parameters: they are then the encoding's parameters, initialised from the same table layout.
        self.tcnn: Optional[nn.Module] = None
        if self._wants_tcnn(device):
            self.tcnn = make_tcnn_encoding(cfg, _flat([p.detach() for p in levels], self.layout))
            self.levels = None
            # checkpoints keep the per-level layout whichever implementation trained them
            self.register_state_dict_post_hook(_tcnn_state_to_levels)
            self.register_load_state_dict_pre_hook(_levels_state_to_tcnn)
        else:
            self.levels = nn.ParameterList(levels)

    def _wants_tcnn(self, device) -> bool:
        impl = self.cfg.implementation
        if impl == "torch" or (impl == "auto" and (device is None or torch.device(device).type != "cuda")):
            return False
        try:
            import tinycudann  # noqa: F401  (optional accelerator)
        except Exception as e:  # ImportError, or a broken CUDA build
            if impl == "tcnn":
                from dreamlmc.errors import DreamlmcError

                raise DreamlmcError(f"renderer.field.hash_grid.implementation=tcnn, but tinycudann cannot be imported "
                                    f"({type(e).__name__}); install it or use implementation=auto")
            warnings.warn("tinycudann is not importable; using the pure-PyTorch hash grid on CUDA")
            return False
        return True

    def tables(self) -> List[torch.Tensor]:
        """The per-level tables in their parameter layout ((1, F, r, r, r) dense, (rows, F) hashed); with tiny-cuda-nn,
        differentiable views of its flat parameters."""
        if self.tcnn is None:
            return list(self.levels)
        return _unflat(self.tcnn.params.float(), self.layout, self.cfg.features_per_level)

    # -- index maths, shared by the fast path and the reference ------------------------------------------------
    def level_rows(self, level: int) -> torch.Tensor:
        """Level `level` as a flat (rows, F) table in tcnn's row order."""
        p = self.tables()[level]
        return p.reshape(p.shape[1], -1).t() if p.dim() == 5 else p

    def level_indices(self, grid: torch.Tensor, level: int) -> torch.Tensor:
        """Integer grid coordinates (..., 3) of one level -> row indices into that level's table."""
        _, res, rows, dense = self.layout[level]
        if dense:
            grid = grid.clamp(0, res - 1)
            return grid[..., 0] + grid[..., 1] * res + grid[..., 2] * (res * res)
        idx = (grid[..., 0] * PRIMES[0]) ^ (grid[..., 1] * PRIMES[1]) ^ (grid[..., 2] * PRIMES[2])
        return idx % rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tcnn is not None:
            return self.tcnn(x).float()
        if self.cfg.implementation == "auto":
            if not x.is_cuda and x.dtype == torch.float32 and self.levels[0].dtype == torch.float32:
                from dreamlmc.renderers.cpu_kernels import hash_kernel

                kernel = hash_kernel()
                if kernel is not None:
                    return self.encode_fused(x, kernel)
        return self.encode(x)

    def encode_fused(self, x: torch.Tensor, kernel) -> torch.Tensor:
        """The fused C++ path (CPU, float32): one pass over points for all levels; gradients to the tables."""
        meta = ([float(s) for s, _, _, _ in self.layout], [r for _, r, _, _ in self.layout],
                [d for _, _, _, d in self.layout], [n for _, _, n, _ in self.layout], self.cfg.features_per_level)
        return _FusedEncode.apply(kernel, meta, x.contiguous(), *self.tables())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The fast pure-PyTorch path."""
        N = x.shape[0]
        tables = self.tables()
        outs: List[torch.Tensor] = []
        hashed = []
        for level, (scale, res, rows, dense) in enumerate(self.layout):
            if dense:
                # align_corners=True puts corner i at normalised 2 i / (res - 1) - 1; border = clamp
                g = (x * scale + 0.5) * (2.0 / (res - 1)) - 1.0
                f = torch.nn.functional.grid_sample(tables[level], g.view(1, 1, 1, N, 3), mode="bilinear",
                                                    padding_mode="border", align_corners=True)
                outs.append(f.view(-1, N).t())
            else:
                outs.append(None)
                hashed.append(level)
        if hashed:
            feats = self._encode_hashed(x, hashed, tables)
            for j, level in enumerate(hashed):
                outs[level] = feats[:, j]
        return torch.cat(outs, dim=-1)

    def _encode_hashed(self, x: torch.Tensor, levels: List[int], tables: List[torch.Tensor]) -> torch.Tensor:
        """All hashed levels' 8 corners in one pass -> (N, len(levels), F).

        Corner indices and trilinear weights are separable per axis, so they are built from (N, L, 2) factors by
        broadcasting; hashing uses int32 wrap-around arithmetic, which keeps the low bits (all that survive the
        power-of-two modulo) exact."""
        N, L = x.shape[0], len(levels)
        scales = torch.tensor([self.layout[l][0] for l in levels], dtype=x.dtype, device=x.device)
        pos = x[:, None, :] * scales[None, :, None] + 0.5  # (N, L, 3)
        base_f = pos.floor()
        frac = pos - base_f
        b = base_f.to(torch.int32)
        one_minus = 1 - frac
        w = [torch.stack([one_minus[..., k], frac[..., k]], dim=-1) for k in range(3)]  # 3 x (N, L, 2)
        weights = (w[2][..., :, None, None] * w[1][..., None, :, None] * w[0][..., None, None, :]).reshape(N, L, 8)
        h = [torch.stack([b[..., k], b[..., k] + 1], dim=-1) * self._primes32[k] for k in range(3)]
        idx = (h[2][..., :, None, None] ^ h[1][..., None, :, None] ^ h[0][..., None, None, :]).reshape(N, L, 8)
        idx = (idx & self._hash_mask).long()
        out = []
        for j, level in enumerate(levels):
            out.append(_WeightedGather.apply(tables[level], idx[:, j], weights[:, j].to(tables[level].dtype)))
        return torch.stack(out, dim=1)

    def reference_encode(self, x: torch.Tensor) -> torch.Tensor:
        """Naive reference: loop over levels and corners, gather each corner separately from a flat table."""
        outs: List[torch.Tensor] = []
        for level, (scale, res, rows, dense) in enumerate(self.layout):
            table = self.level_rows(level)
            pos = x * scale + 0.5
            base = pos.floor()
            frac = pos - base
            acc = 0.0
            for c in range(8):
                off = self.corners[c]
                idx = self.level_indices(base.long() + off, level)
                w = torch.where(off.bool(), frac, 1 - frac).prod(-1, keepdim=True)
                acc = acc + w * table[idx]
            outs.append(acc)
        return torch.cat(outs, dim=-1)

    def flat_table(self) -> torch.Tensor:
        """All levels' rows concatenated in tcnn's parameter order (dense levels padded to a multiple of 8)."""
        return _flat(self.tables(), self.layout)


def _flat(tables: List[torch.Tensor], layout) -> torch.Tensor:
    """Per-level tables -> tcnn's flat parameter vector: level by level, (rows, F) row-major, rows padded to 8."""
    parts = []
    for t, (_, res, rows, dense) in zip(tables, layout):
        rows_t = t.reshape(t.shape[1], -1).t() if t.dim() == 5 else t
        if rows > rows_t.shape[0]:
            rows_t = torch.cat([rows_t, rows_t.new_zeros(rows - rows_t.shape[0], rows_t.shape[1])])
        parts.append(rows_t.reshape(-1))
    return torch.cat(parts)


def _unflat(flat: torch.Tensor, layout, F: int) -> List[torch.Tensor]:
    """The inverse of _flat: tcnn's flat vector -> per-level tables in dreamlmc's parameter layout."""
    out, offset = [], 0
    for _, res, rows, dense in layout:
        block = flat[offset: offset + rows * F].reshape(rows, F)
        offset += rows * F
        out.append(block[: res ** 3].t().reshape(1, F, res, res, res) if dense else block)
    return out


def _tcnn_state_to_levels(module, state_dict, prefix, local_metadata):
    """state_dict post-hook: write the tcnn parameters as levels.0, levels.1, ... (the CPU layout)."""
    flat = state_dict.pop(prefix + "tcnn.params")
    for i, t in enumerate(_unflat(flat.detach().float(), module.layout, module.cfg.features_per_level)):
        state_dict[f"{prefix}levels.{i}"] = t.contiguous()


def _levels_state_to_tcnn(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                          error_msgs):
    """load_state_dict pre-hook: levels.* (from any implementation) -> the tcnn module's flat parameters."""
    keys = [f"{prefix}levels.{i}" for i in range(len(module.layout))]
    if all(k in state_dict for k in keys):
        flat = _flat([state_dict.pop(k) for k in keys], module.layout)
        if flat.numel() != module.tcnn.params.numel():
            raise ValueError(f"hash grid checkpoint holds {flat.numel()} parameters, tiny-cuda-nn's layout "
                             f"{module.tcnn.params.numel()}")
        state_dict[prefix + "tcnn.params"] = flat.to(module.tcnn.params.dtype)


class _FusedEncode(torch.autograd.Function):
    """Autograd wrapper of the fused kernel: forward (N, L*F); backward gives each level's table its gradient."""

    @staticmethod
    def forward(ctx, kernel, meta, x, *tables):
        ctx.kernel, ctx.meta = kernel, meta
        tables = [t.contiguous() for t in tables]
        ctx.save_for_backward(x, *tables)
        return kernel.forward(x, tables, *meta)

    @staticmethod
    def backward(ctx, grad_out):
        x, *tables = ctx.saved_tensors
        grads = ctx.kernel.backward(grad_out, x, tables, *ctx.meta)
        return (None, None, None) + tuple(grads)


class _WeightedGather(torch.autograd.Function):
    """out[m] = sum_c w[m, c] * table[idx[m, c]]; backward is one scatter_add (measured on the 2-core CPU for 3.2 M
    rows: 13 ms, against 40 ms for index_add, 78 ms for index_put and a sort-bound embedding_bag backward).
    Gradients flow to the table only: positions are data, not parameters."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        M, F = idx.shape[0], table.shape[1]  # idx, w: (M, 8)
        ctx.save_for_backward(idx, w)
        ctx.num_rows = table.shape[0]
        feats = table.index_select(0, idx.reshape(-1)).reshape(M, 8, F)
        return torch.einsum("mcf,mc->mf", feats, w)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        idx, w = ctx.saved_tensors
        contrib = (w[:, :, None] * grad_out[:, None, :]).reshape(-1, grad_out.shape[1])
        F = grad_out.shape[1]
        grad_table = torch.zeros(ctx.num_rows, F, dtype=grad_out.dtype, device=grad_out.device)
        grad_table.scatter_add_(0, idx.reshape(-1, 1).expand(-1, F), contrib)
        return grad_table, None, None


def make_tcnn_encoding(cfg: HashGridConfig, table: torch.Tensor) -> nn.Module:
    """A tinycudann.Encoding with the same config, its parameters initialised from our flat table. A layout that does
    not match ours parameter for parameter is an error (it would silently scramble the grid)."""
    import tinycudann as tcnn

    enc = tcnn.Encoding(3, {"otype": "HashGrid", "n_levels": cfg.num_levels,
                            "n_features_per_level": cfg.features_per_level,
                            "log2_hashmap_size": cfg.log2_table_size, "base_resolution": cfg.base_resolution,
                            "per_level_scale": cfg.growth_factor}, dtype=torch.float32)
    if enc.params.numel() != table.numel():
        raise ValueError(f"tiny-cuda-nn's hash grid has {enc.params.numel()} parameters where dreamlmc's layout has "
                         f"{table.numel()} (levels {cfg.num_levels}, table 2^{cfg.log2_table_size}); refusing to "
                         "truncate. Use renderer.field.hash_grid.implementation=torch")
    with torch.no_grad():
        enc.params.copy_(table.reshape(-1).to(enc.params))
    return enc
