"""Media writers: PNG images, image grids, turntable videos; all written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

from dreamlmc.errors import DreamlmcError
from dreamlmc.io import atomic_write


def grid(rows: Sequence[torch.Tensor], pad: float = 1.0) -> torch.Tensor:
    """Rows of images, each (N, 3, H, W), -> one (3, rows * H, max N * W) image; short rows are padded (white)."""
    width = max(r.shape[0] for r in rows)
    out = []
    for r in rows:
        r = r.detach().cpu()
        if r.shape[0] < width:
            r = torch.cat([r, torch.full((width - r.shape[0],) + tuple(r.shape[1:]), pad, dtype=r.dtype)])
        out.append(torch.cat(list(r), -1))
    return torch.cat(out, -2)


def save_png(img: torch.Tensor, path: Path) -> Path:
    """(3, H, W) in [0, 1] -> PNG, atomically."""
    from PIL import Image

    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    atomic_write(Path(path), lambda p: Image.fromarray(arr).save(p, format="PNG"))
    return Path(path)


def load_png(path: Path) -> torch.Tensor:
    """PNG -> (3, H, W) in [0, 1]."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1)


def write_video(frames: List[np.ndarray], path: Path, fps: int) -> Path:
    """MP4 through imageio-ffmpeg; a GIF beside it when ffmpeg is unavailable. Returns the written path."""
    import imageio.v2 as imageio

    path = Path(path)
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        atomic_write(path, lambda p: imageio.mimwrite(p, frames, fps=fps, format="FFMPEG", codec="libx264",
                                                       quality=8, macro_block_size=1))
        return path
    except DreamlmcError:  # the disk, not ffmpeg: a GIF would fail the same way
        raise
    except Exception:
        gif = path.with_suffix(".gif")
        atomic_write(gif, lambda p: imageio.mimwrite(p, frames, format="GIF", duration=1.0 / fps, loop=0))
        return gif
