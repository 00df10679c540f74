"""Noise for score distillation: fresh ε every step, or one fixed ε* held for the whole run.

Fixed ε: one ε* drawn from a generator seeded with eps_seed at the backend's input shape, reused at every step and
shared by every view of a batch; its seed is a handle for reproducible variations. Timesteps and fresh noise come
from the guidance's own generator, so the run's other randomness cannot shift them; both are in state_dict().
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


class NoiseSource:
    def __init__(self, shape: Tuple[int, int, int], fixed: bool, eps_seed: int = 0, seed: int = 0):
        self.shape, self.fixed, self.eps_seed = tuple(shape), fixed, eps_seed
        self.generator = torch.Generator().manual_seed(seed)
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
        """Integer timesteps uniform in [t_min, t_max] (inclusive), (batch,)."""
        return torch.randint(t_min, t_max + 1, (batch,), generator=self.generator)

    def state_dict(self) -> dict:
        state = {"generator": self.generator.get_state(), "fixed": self.fixed, "eps_seed": self.eps_seed}
        if self.eps_star is not None:
            state["eps_star"] = self.eps_star.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if state.get("eps_star") is not None:
            self.eps_star = state["eps_star"].clone()
            self.fixed = True
