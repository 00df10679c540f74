"""Noise for score distillation: fresh ε every step, or one fixed ε* held for the whole run.

Fixed ε: one ε* drawn from a generator seeded with eps_seed at the backend's input shape, reused at every step and
shared by every view of a batch; its seed is a handle for reproducible variations. Timesteps and fresh noise come
from the guidance's own generator, so the run's other randomness cannot shift them; both are in state_dict().
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


GOLDEN = 0.6180339887498949  # 1/φ: the additive recurrence frac(u0 + k/φ) spreads any run of k draws evenly


class NoiseSource:
    def __init__(self, shape: Tuple[int, int, int], fixed: bool, eps_seed: int = 0, seed: int = 0,
                 stratified_t: bool = False):
        self.shape, self.fixed, self.eps_seed = tuple(shape), fixed, eps_seed
        self.generator = torch.Generator().manual_seed(seed)
        # stratified timesteps: a low-discrepancy sequence instead of independent draws, so that every stretch of
        # training sees the whole t range evenly (any 10 consecutive steps cover each tenth of it about once)
        self.stratified_t = stratified_t
        self.t_offset = float(torch.rand((), generator=torch.Generator().manual_seed(seed + 1)))
        self.t_calls = 0
        self.eps_star: Optional[torch.Tensor] = None
        if fixed:
            self.eps_star = torch.randn((1,) + self.shape, generator=torch.Generator().manual_seed(eps_seed))

    def sample(self, batch: int) -> torch.Tensor:
        """(batch, C, h, w): ε* expanded over the batch, or fresh standard normal noise."""
        if self.fixed:
            return self.eps_star.expand(batch, *self.shape).clone()
        return self.fresh(batch)

    def fresh(self, batch: int) -> torch.Tensor:
        return torch.randn((batch,) + self.shape, generator=self.generator)

    def timesteps(self, batch: int, t_min: int, t_max: int) -> torch.Tensor:
        """Integer timesteps uniform in [t_min, t_max] (inclusive), (batch,): independent draws, or the next
        points of the golden-ratio sequence (stratified; a batch's views evenly spaced around it)."""
        if not self.stratified_t:
            return torch.randint(t_min, t_max + 1, (batch,), generator=self.generator)
        u = (self.t_offset + self.t_calls * GOLDEN + torch.arange(batch, dtype=torch.float64) / batch) % 1.0
        self.t_calls += 1
        return (t_min + torch.floor(u * (t_max - t_min + 1))).long().clamp(t_min, t_max)

    def state_dict(self) -> dict:
        state = {"generator": self.generator.get_state(), "fixed": self.fixed, "eps_seed": self.eps_seed,
                 "t_calls": self.t_calls, "t_offset": self.t_offset}
        if self.eps_star is not None:
            state["eps_star"] = self.eps_star.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.t_calls = int(state.get("t_calls", 0))
        self.t_offset = float(state.get("t_offset", self.t_offset))
        if state.get("eps_star") is not None:
            self.eps_star = state["eps_star"].clone()
            self.fixed = True
