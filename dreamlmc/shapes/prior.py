"""The built-in prior's network: a tiny text encoder over the world's vocabulary and a small pixel-space UNet.

A prompt becomes 4 tokens [BOS, colour, shape, view] (a missing part is PAD; the empty prompt, used for
classifier-free guidance, is [BOS, PAD, PAD, PAD]); a prior trained with ground words (config seq_len 5) has a fifth,
the ground ("on grey"; PAD: the white ground). The encoder embeds them (token + position, LayerNorm); the
UNet (diffusers UNet2DConditionModel) cross-attends to the 4 embeddings and also receives their mean as a global
"class" embedding added to the timestep embedding, which makes the conditioning converge fast on a CPU budget.
Weights live in one safetensors file (prefixes "text." and "unet.") beside a JSON card.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from dreamlmc.errors import DreamlmcError
from dreamlmc.shapes.world import COLOURS, GROUNDS, SHAPES, VIEWS, parse_prompt, split_ground

PAD, BOS = 0, 1
TOKENS: Tuple[str, ...] = ("<pad>", "<bos>") + tuple(COLOURS) + SHAPES + VIEWS + GROUNDS
TOKEN_ID = {t: i for i, t in enumerate(TOKENS)}
SEQ_LEN = 4  # without ground words; 5 with them (config "seq_len")

DEFAULT_CONFIG: Dict = {
    "resolution": 32,
    "embed_dim": 64,
    # Measured on the 2-core CPU (batch 32, bf16 autocast, one train step): this 5.6 M-parameter layout (attention
    # only at 8x8) 0.43 s; channels 32/64/128 with attention at 16x16 and 8x8 (4.2 M) 0.47 s; 48/96/192 0.67 s.
    "block_out_channels": [64, 128, 128],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
}
GROUND_SEQ_LEN = 5


def seq_len_of(cfg: Dict) -> int:
    return int(cfg.get("seq_len", SEQ_LEN))


def tokenize_parts(colour: Optional[str], shape: Optional[str], view: Optional[str]) -> List[int]:
    return [BOS, TOKEN_ID[colour] if colour else PAD, TOKEN_ID[shape] if shape else PAD,
            TOKEN_ID[view] if view else PAD]


def tokenize(prompts: Sequence[str], seq_len: int = SEQ_LEN) -> torch.Tensor:
    """Prompts -> (B, seq_len) token ids. "" is the unconditional prompt ("on grey" alone: a grey view's, for a prior
    with ground words, seq_len 5); an unknown word raises DreamlmcError."""
    ids = []
    for p in prompts:
        rest, ground = split_ground(p)
        if ground is not None and seq_len < GROUND_SEQ_LEN:
            raise DreamlmcError(f"the prompt {p!r} names a ground ('on {ground}'), but this prior was trained without "
                                "ground words; drop the phrase or fine-tune with tools/train_prior.py --ground-words")
        if rest == "":
            row = [BOS, PAD, PAD, PAD]
        else:
            parts = parse_prompt(rest)
            row = tokenize_parts(parts["colour"], parts["shape"], parts["view"])
        if seq_len >= GROUND_SEQ_LEN:
            row.append(TOKEN_ID[ground] if ground else PAD)
        ids.append(row)
    return torch.tensor(ids, dtype=torch.long)


def unconditional_prompt(prompt: str, keyed_colours: Sequence[str] = ()) -> str:
    """The classifier-free guidance partner of a prompt: "" or, for a prompt that names a ground, that ground alone
    (so that the two predictions agree on it and guidance amplifies only the object). For a colour-keyed prior
    (its data drew every object of keyed_colours on grey, the card's data.grey_colours) a prompt of such a colour
    gets its colour alone ("a white"): "" means the white ground there, which guidance would push away from."""
    rest, ground = split_ground(prompt)
    if ground:
        return f"on {ground}"
    if keyed_colours and rest:
        colour = parse_prompt(rest)["colour"]
        if colour in keyed_colours:
            return f"a {colour}"
    return ""


def keyed_colours_of(card: Dict) -> Tuple[str, ...]:
    """The colours a prior's data always drew on grey (tools/make_shapes_data.py --grey-colours): () for most."""
    return tuple(str(c) for c in (card.get("data") or {}).get("grey_colours", ()))


class TinyTextEncoder(nn.Module):
    """(B, L) token ids -> (B, L, D) hidden states (L = seq_len: 4, or 5 with ground words)."""

    def __init__(self, embed_dim: int, seq_len: int = SEQ_LEN):
        super().__init__()
        self.token = nn.Embedding(len(TOKENS), embed_dim)
        self.position = nn.Parameter(torch.zeros(seq_len, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)
        nn.init.normal_(self.token.weight, std=0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.token(ids) + self.position)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Weights from before the last words existed have fewer token rows: each new view word starts as the mean of
        # front and side (a diagonal view between them), a ground word as a fixed random row of the others' typical
        # norm, until a fine-tune teaches it (a ground word started as PAD stays indistinguishable from "no ground":
        # after 1,200 fine-tuning steps it had moved 0.08 from PAD, whose norm is 3.5, and the prior drew every prompt
        # on grey half the time). Weights without a ground slot have 4 positions: a fifth starts at zero.
        key = prefix + "token.weight"
        w = state_dict.get(key)
        if w is not None and w.shape[0] < len(TOKENS):
            between = w[[TOKEN_ID["front"], TOKEN_ID["side"]]].mean(0)
            rows = [_new_word_row(w, i) if TOKENS[i] in GROUNDS else between for i in range(w.shape[0], len(TOKENS))]
            state_dict[key] = torch.cat([w, torch.stack(rows)])
        key = prefix + "position"
        pos = state_dict.get(key)
        if pos is not None and pos.shape[0] < self.position.shape[0]:
            state_dict[key] = torch.cat([pos, pos.new_zeros(self.position.shape[0] - pos.shape[0], pos.shape[1])])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _new_word_row(w: torch.Tensor, index: int) -> torch.Tensor:
    """A fixed random embedding row (seeded by its token index, never the global generator) of the mean norm of the
    rows w has."""
    r = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(index)).to(w)
    return r / r.norm() * w.norm(dim=1).mean()


def build_unet(cfg: Dict) -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=cfg["resolution"], in_channels=3, out_channels=3,
        block_out_channels=tuple(cfg["block_out_channels"]), layers_per_block=cfg["layers_per_block"],
        down_block_types=tuple(cfg["down_block_types"]), up_block_types=tuple(cfg["up_block_types"]),
        cross_attention_dim=cfg["embed_dim"], attention_head_dim=cfg["attention_head_dim"],
        norm_num_groups=8, class_embed_type="projection",
        projection_class_embeddings_input_dim=cfg["embed_dim"],
    )


class PriorNet(nn.Module):
    """Text encoder + UNet. forward(x_t (B,3,R,R) in [-1,1] space, t (B,), ids (B,L)) -> ε prediction."""

    def __init__(self, cfg: Optional[Dict] = None):
        super().__init__()
        self.cfg = dict(DEFAULT_CONFIG, **(cfg or {}))
        self.text = TinyTextEncoder(self.cfg["embed_dim"], seq_len_of(self.cfg))
        self.unet = build_unet(self.cfg)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text(ids)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, L, D) from encode(); the mean over tokens is the global class embedding."""
        return self.unet(x_t, t, encoder_hidden_states=hidden, class_labels=hidden.mean(1)).sample

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.predict(x_t, t, self.encode(ids))


def make_scheduler(cfg: Dict):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg["num_train_timesteps"], beta_schedule=cfg["beta_schedule"],
                         prediction_type=cfg["prediction_type"], clip_sample=False)


def save_prior(net: PriorNet, path: Path, card: Dict, dtype: torch.dtype = torch.float16) -> None:
    """Write net's weights (fp16 by default) and its card (dreamlmc.netio), atomically."""
    from dreamlmc.netio import save_network

    save_network(net, path, dict(card, config=net.cfg, kind="dreamlmc-builtin-prior"), dtype=dtype)


def load_prior(path: Path, device="cpu", dtype: torch.dtype = torch.float32) -> Tuple[PriorNet, Dict]:
    """Load weights + card written by save_prior (safetensors only, never pickle)."""
    from dreamlmc.netio import load_network

    return load_network(path, lambda card: PriorNet(card.get("config")), "built-in prior weights",
                        "reinstall dreamlmc or train them with tools/train_prior.py", kind="dreamlmc-builtin-prior",
                        device=device, dtype=dtype)


@torch.no_grad()
def sample(net: PriorNet, prompts: Sequence[str], guidance_scale: float = 3.0, steps: int = 50,
           generator: Optional[torch.Generator] = None, device="cpu",
           keyed_colours: Sequence[str] = ()) -> torch.Tensor:
    """DDIM samples for prompts -> (B, 3, R, R) in [0, 1]. keyed_colours: keyed_colours_of(the prior's card).

    guidance_scale s uses the diffusers convention: ε̂ = ε_u + s (ε_c − ε_u); s = 1 is purely conditional.
    """
    from dreamlmc.guidance.diffusion import ddim_sample

    cfg = net.cfg
    B, R = len(prompts), cfg["resolution"]
    dtype = next(net.parameters()).dtype
    x = torch.randn(B, 3, R, R, generator=generator).to(device=device, dtype=dtype)
    L = seq_len_of(cfg)
    uncond = [unconditional_prompt(p, keyed_colours) for p in prompts]
    hidden = net.encode(torch.cat([tokenize(prompts, L), tokenize(uncond, L)]).to(device))

    def predict(x_t, t):  # conditional and unconditional in one batch
        return net.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), hidden).chunk(2)

    x = ddim_sample(predict, x, make_scheduler(cfg), steps, guidance_scale)
    return ((x.float() + 1) / 2).clamp(0, 1)
