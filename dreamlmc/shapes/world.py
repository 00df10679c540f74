"""The built-in prior's world: six shapes x eight colours with known geometry and albedo.

Everything here is ground truth: analytic signed distance functions (scene units, +Y up, object centred at the
origin), fixed albedos and the prompt grammar. The analytic renderer that makes the prior's training images and
the benchmarks' reference renders is render.py; this module imports no renderer, so the built-in backend may use it.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import torch

from dreamlmc.errors import DreamlmcError

SHAPES: Tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "torus", "pyramid")
COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.10),
    "orange": (0.90, 0.50, 0.10),
    "yellow": (0.90, 0.85, 0.15),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.15, 0.30, 0.85),
    "purple": (0.55, 0.20, 0.75),
    "white": (0.92, 0.92, 0.92),
    "black": (0.10, 0.10, 0.10),
}
# DreamFusion's view words, then "three-quarter" for the diagonals between them (45° view bins, a prior trained with
# `tools/train_prior.py --fine-views`; camera.fine_views): the last word was added later, so older priors' token
# tables are one row shorter (shapes.prior pads them)
VIEWS: Tuple[str, ...] = ("front", "side", "back", "overhead", "three-quarter")
BACKGROUND = (1.0, 1.0, 1.0)
# Ground words: a prompt may end in "on grey" ("on a grey background") to name a non-white ground. A prior trained
# with `tools/train_prior.py --ground-words` captions every image on a grey that way and never drops the phrase, so
# for it a prompt without one means the white ground, and "on grey" alone is the unconditional prompt of a grey view
# (its classifier-free guidance then agrees with the prompt on the ground; README rows 106, 128). Older priors have no
# ground slot and refuse the phrase.
GROUNDS: Tuple[str, ...] = ("grey",)
# The other backgrounds a prior may be trained on: solid greys in this range, one per image. Greys (not any colour)
# so that no object can vanish into a background of its own colour (a red cube on red is a red frame, and a field
# that fills its bounding sphere scores well against it); this range keeps white (0.92) and black (0.1) objects
# apart from every grey. The renderer's `background: grey` draws from the same range (a test keeps them equal).
GREY_RANGE = (0.35, 0.75)
# The light of the prior's data: a point light near the camera, Lambertian with these ambient and diffuse terms
# (the renderer's defaults, renderers/shading.py; a test keeps the two equal)
AMBIENT, DIFFUSE = 0.2, 0.8
BOUND_RADIUS = 1.0  # every shape lies inside this sphere

# -------------------------------------------------------------------------------------------------- SDFs


def _length2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def sdf_cube(p: torch.Tensor, side: float = 1.0) -> torch.Tensor:
    q = p.abs() - 0.5 * side
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def sdf_sphere(p: torch.Tensor, radius: float = 0.6) -> torch.Tensor:
    return p.norm(dim=-1) - radius


def sdf_cylinder(p: torch.Tensor, radius: float = 0.45, height: float = 1.0) -> torch.Tensor:
    dx = _length2(p[..., 0], p[..., 2]) - radius
    dy = p[..., 1].abs() - 0.5 * height
    return torch.minimum(torch.maximum(dx, dy), torch.zeros_like(dx)) + _length2(dx.clamp(min=0), dy.clamp(min=0))


def sdf_cone(p: torch.Tensor, radius: float = 0.55, height: float = 1.1) -> torch.Tensor:
    """Exact SDF of a capped cone, base radius `radius` at y = -height/2, apex at y = +height/2."""
    h, r1, r2 = 0.5 * height, radius, 0.0
    qx, qy = _length2(p[..., 0], p[..., 2]), p[..., 1]
    k1x, k1y = r2, h
    k2x, k2y = r2 - r1, 2.0 * h
    ca_x = qx - torch.minimum(qx, torch.where(qy < 0, torch.full_like(qx, r1), torch.full_like(qx, r2)))
    ca_y = qy.abs() - h
    tt = (((k1x - qx) * k2x + (k1y - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0.0, 1.0)
    cb_x, cb_y = qx - k1x + k2x * tt, qy - k1y + k2y * tt
    sign = torch.where((cb_x < 0) & (ca_y < 0), -1.0, 1.0)
    return sign * torch.sqrt(torch.minimum(ca_x ** 2 + ca_y ** 2, cb_x ** 2 + cb_y ** 2))


def sdf_torus(p: torch.Tensor, major: float = 0.5, minor: float = 0.18) -> torch.Tensor:
    return _length2(_length2(p[..., 0], p[..., 2]) - major, p[..., 1]) - minor


def sdf_pyramid(p: torch.Tensor, base: float = 1.0, height: float = 1.0) -> torch.Tensor:
    """Exact SDF of a square pyramid (base side `base`, axis-aligned, at y = -height/2; apex at +height/2)."""
    s = base  # work in units of the base side, where the classic formula has base side 1
    h = height / s
    x, y, z = p[..., 0].abs() / s, p[..., 1] / s + 0.5 * h, p[..., 2].abs() / s
    swap = z > x
    x, z = torch.where(swap, z, x), torch.where(swap, x, z)
    x, z = x - 0.5, z - 0.5
    m2 = h * h + 0.25
    qx, qy, qz = z, h * y - 0.5 * x, h * x + 0.5 * y
    ss = (-qx).clamp(min=0)
    t = ((qy - 0.5 * z) / (m2 + 0.25)).clamp(0.0, 1.0)
    a = m2 * (qx + ss) ** 2 + qy * qy
    b = m2 * (qx + 0.5 * t) ** 2 + (qy - m2 * t) ** 2
    d2 = torch.where(torch.minimum(qy, -qx * m2 - qy * 0.5) > 0, torch.zeros_like(a), torch.minimum(a, b))
    return s * torch.sqrt((d2 + qz * qz) / m2) * torch.sign(torch.maximum(qz, -y))


SDFS = {"cube": sdf_cube, "sphere": sdf_sphere, "cylinder": sdf_cylinder, "cone": sdf_cone,
        "torus": sdf_torus, "pyramid": sdf_pyramid}

# Exact volumes (scene units^3), used by tests of the SDFs and by the IoU benchmark.
VOLUMES = {
    "cube": 1.0,
    "sphere": 4.0 / 3.0 * torch.pi * 0.6 ** 3,
    "cylinder": torch.pi * 0.45 ** 2 * 1.0,
    "cone": torch.pi * 0.55 ** 2 * 1.1 / 3.0,
    "torus": 2.0 * torch.pi ** 2 * 0.5 * 0.18 ** 2,
    "pyramid": 1.0 / 3.0,
}


def sdf(shape: str, points: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) of the named shape at points (..., 3) -> (...)."""
    if shape not in SDFS:
        raise DreamlmcError(f"unknown shape {shape!r}; the world has {', '.join(SHAPES)}")
    return SDFS[shape](points)


# -------------------------------------------------------------------------------------------------- prompts

ARTICLES = ("a", "an", "the")
VOCABULARY: Tuple[str, ...] = tuple(COLOURS) + SHAPES + VIEWS + ARTICLES + ("view",)


def normalise_prompt(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt.strip().lower())


_GROUND_PHRASE = re.compile(r"(?:^|[\s,.;]+)on (?:a |the )?(" + "|".join(GROUNDS) + r")(?: background| ground)?(?=$|[\s,.;])")


def split_ground(prompt: str) -> Tuple[str, Optional[str]]:
    """'a white cube, front view, on grey' -> ('a white cube, front view', 'grey'); no ground phrase -> (prompt, None)."""
    text = normalise_prompt(prompt)
    m = _GROUND_PHRASE.search(text)
    if m is None:
        return text, None
    return (text[:m.start()] + text[m.end():]).strip(" ,.;"), m.group(1)


def parse_prompt(prompt: str) -> Dict[str, Optional[str]]:
    """'a red cube, front view' -> {'colour': 'red', 'shape': 'cube', 'view': 'front', 'ground': None}; any part may
    be None ('ground': 'grey' for a prompt that ends in 'on grey').

    Raises DreamlmcError for an empty prompt or a word outside the world's vocabulary.
    """
    text, ground = split_ground(prompt)
    if not text and ground is None:
        raise DreamlmcError("the prompt is empty; try e.g. --prompt \"a red cube\"")
    words = [w for w in re.split(r"[\s,.;]+", text) if w]
    unknown = [w for w in words if w not in VOCABULARY]
    if unknown:
        raise DreamlmcError(
            f"the built-in prior does not know {', '.join(repr(w) for w in unknown)}; it knows colours "
            f"({', '.join(COLOURS)}), shapes ({', '.join(SHAPES)}) and views ({', '.join(VIEWS)}). For any other "
            "prompt use a real diffusion model with --model <hub id or local folder>")
    out: Dict[str, Optional[str]] = {"colour": None, "shape": None, "view": None, "ground": ground}
    for w in words:
        for key, names in (("colour", COLOURS), ("shape", SHAPES), ("view", VIEWS)):
            if w in names:
                if out[key] is not None and out[key] != w:
                    raise DreamlmcError(f"the prompt names two {key}s ({out[key]!r} and {w!r}); name one")
                out[key] = w
    if out["colour"] is None and out["shape"] is None:
        raise DreamlmcError(f"the prompt {prompt!r} names neither a colour nor a shape; try \"a red cube\"")
    return out


def prompt_for(colour: Optional[str], shape: Optional[str], view: Optional[str] = None,
               ground: Optional[str] = None) -> str:
    words = [w for w in (colour, shape) if w]
    body = " ".join(words)
    article = "an" if body[:1] in "aeiou" else "a"
    text = f"{article} {body}"
    text = f"{text}, {view} view" if view else text
    return f"{text}, on {ground}" if ground else text
