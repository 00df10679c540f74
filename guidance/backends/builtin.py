"""The built-in prior as a backend: pixel space (3, R, R) in [-1, 1], the world's vocabulary only."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import torch

from dreamlmc.guidance.backends.base import PixelSpaceBackend
from dreamlmc.errors import DreamlmcError
from dreamlmc.shapes.prior import (GROUND_SEQ_LEN, TOKENS, keyed_colours_of, load_prior, make_scheduler, sample,
                                   seq_len_of, tokenize, unconditional_prompt)



def _assets_dir() -> Path:
    import dreamlmc.assets

    return Path(dreamlmc.assets.__file__).parent


def default_weights() -> Path:
    return _assets_dir() / "builtin_prior.safetensors"


# --model builtin-dark: the shipped prior fine-tuned with half of its data on dark grey grounds (0.2-0.3), for white
# objects, which vanish into the white grounds of the shipped prior's world (README rows 87-94, 105); it uses the
# shipped prior's k_psi (its card names that prior's fingerprint under shares_corrective_of)
DARK = "builtin-dark"


def dark_weights() -> Path:
    return _assets_dir() / "builtin_prior_dark.safetensors"


def dark_ground_views(colour: str, weights: Optional[Path] = None) -> Tuple[float, Tuple[float, float]]:
    """How a prompt of `colour` trains on the dark-ground prior (TrainConfig.white_on_dark), as that prior's data
    had it (its card): (the share of its views on white, the greys of the others). A colour-keyed prior
    (tools/make_shapes_data.py --grey-colours) drew every object of its keyed colours on grey, so their views all
    go on grey; a mixed one (half of every prompt's images on grey, README row 105) puts half of them there."""
    from dreamlmc.netio import read_card

    card = read_card(Path(weights) if weights else dark_weights())
    data = card.get("data", {})
    greys = tuple(float(g) for g in data.get("grey_range", (0.2, 0.3)))
    if colour in keyed_colours_of(card):
        return 0.0, greys
    return float(data.get("white_fraction", 0.5)), greys


def weights_fingerprint(weights: Path) -> str:
    """Which weights exactly (the first 16 hex digits of their SHA-256): a k_psi card records it, so a corrective
    left over from older weights is noticed; the quality benchmark keys its run cache by it."""
    import hashlib

    return hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]


# The elevations of the shipped prior's data: its card predates the card's data section, and
# tools/make_shapes_data.py drew -10...45 degrees then (CameraConfig's default)
SHIPPED_DATA_ELEVATION = (-10.0, 45.0)


class BuiltinBackend(PixelSpaceBackend):
    model_id = "builtin"

    def __init__(self, weights: Optional[Path] = None, device="cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.device, self.dtype = torch.device(device), dtype
        self.weights = dark_weights() if weights == DARK else Path(weights) if weights else default_weights()
        self.net, self.prior_card = load_prior(self.weights, device=self.device, dtype=dtype)
        self.fingerprint = weights_fingerprint(self.weights)
        self.seq_len = seq_len_of(self.net.cfg)
        self.ground_words = self.seq_len >= GROUND_SEQ_LEN
        self.keyed_colours = keyed_colours_of(self.prior_card)  # their prompts' unconditional is the colour alone
        # the priors whose k_psi fits these weights: their own, and the one a fine-tune declares it shares
        self.corrective_fingerprints = {self.fingerprint} | ({self.prior_card["shares_corrective_of"]}
                                                             if self.prior_card.get("shares_corrective_of") else set())
        R = self.net.cfg["resolution"]
        self.latent_shape = (3, R, R)
        self.image_resolution = R
        self.scheduler = make_scheduler(self.net.cfg)  # the training schedule (guidance/diffusion.py samples with it)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.float().to(self.device)

    dark_ground_views = staticmethod(dark_ground_views)

    @classmethod
    def world(cls):
        from types import SimpleNamespace

        from dreamlmc.shapes import data, metrics, world

        return SimpleNamespace(grammar=world, data=data, metrics=metrics)

    @classmethod
    def check_prompt(cls, prompt: str) -> None:
        """Only the world's words (colours, shapes, views): anything else is a one-line error naming them."""
        from dreamlmc.shapes.world import parse_prompt

        parse_prompt(prompt)

    def partial_prompts(self, prompts: List[str]) -> List[str]:
        """'a white cube, front view' -> 'a white, front view'; a prompt without a colour -> its unconditional ('' or
        its ground alone), so composable guidance is plain guidance for it. A named ground stays."""
        from dreamlmc.shapes.world import parse_prompt, prompt_for

        out = []
        for p in prompts:
            parts = parse_prompt(p)
            out.append(prompt_for(parts["colour"], None, parts["view"], parts["ground"]) if parts["colour"]
                       else unconditional_prompt(p, self.keyed_colours))
        return out

    def unconditional_prompts(self, prompts) -> List[str]:
        return [unconditional_prompt(p, self.keyed_colours) for p in prompts]

    def _encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        ids = tokenize(prompts, self.seq_len)
        known = set(self.prior_card.get("vocabulary") or TOKENS)  # the words its captions used (card), by name
        unknown = sorted({TOKENS[i] for i in ids.unique().tolist()} - known)
        if unknown:
            hint = ("fine-tune it with tools/train_prior.py --fine-views, or set camera.fine_views=false"
                    if "three-quarter" in unknown else "use a prompt in its card's vocabulary")
            raise DreamlmcError(f"the prior {self.weights} was trained without the word {unknown[0]!r}; {hint}")
        return self.net.encode(ids.to(self.device))

    def _predict(self, x_t, t, emb):
        return self.net.predict(x_t.to(self.dtype), t.to(self.device), emb.to(self.dtype))

    def sample_images(self, prompts, guidance_scale, steps, generator=None):
        return sample(self.net, list(prompts), guidance_scale, steps, generator=generator, device=self.device,
                      keyed_colours=self.keyed_colours)

    def data_elevation_range(self) -> Tuple[float, float]:
        rng = (self.prior_card.get("data") or {}).get("elevation_range") or SHIPPED_DATA_ELEVATION
        return float(rng[0]), float(rng[1])

    def card(self):
        return dict(super().card(), prior_fingerprint=self.fingerprint, prior_steps=self.prior_card.get("steps"))

    def default_corrective(self) -> Optional[str]:
        """The k_psi shipped for these weights: the one their card names (a file beside them), else the shipped
        prior's."""
        own = self.prior_card.get("corrective")
        p = self.weights.parent / own if own else _assets_dir() / "builtin_corrective.safetensors"
        return str(p) if p.exists() else None
