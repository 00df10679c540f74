"""Run reports a person opens: report.html per run (offline, one file), index.html for a folder of runs, and a small
localhost server for `dreamlmc view`.

report.html holds the prompt and key settings, the resolved config (collapsed), the preview and turntable, plots of
the loss terms, t and gradient norms over steps (inline SVG), wall time and peak RSS, and the asset in an interactive
viewer (Google's <model-viewer>, vendored in dreamlmc/assets/web and inlined; the GLB is inlined as a data: URI
because browsers refuse fetch() of file:// URLs) with a download link for model.glb.
"""
from __future__ import annotations

import base64
import html
import http.server
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dreamlmc.errors import DreamlmcError
from dreamlmc.io import atomic_write_text

from dreamlmc.runs import DONE  # noqa: E402  (the one marker of a finished run)
VIEWER_JS = "model-viewer-4.4.0-umd.min.js"
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


# ------------------------------------------------------------------------------------------------ run folders

def is_run(folder: Path) -> bool:
    return (folder / "config.yaml").exists() and (folder / "checkpoints").exists()


def finished_runs(folder: Path) -> List[Path]:
    """Finished run folders directly inside `folder` (variations, a batch), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and is_run(p) and (p / DONE).exists())


def check_run(run: Path) -> None:
    """A one-line DreamlmcError for anything that is not a finished dreamlmc run folder."""
    if not run.exists():
        raise DreamlmcError(f"{run} does not exist")
    if not run.is_dir():
        raise DreamlmcError(f"{run} is a file, not a run folder")
    if not is_run(run):
        raise DreamlmcError(f"{run} is not a dreamlmc run folder (no config.yaml and checkpoints/ there)")
    if not (run / DONE).exists():
        raise DreamlmcError(f"{run} is not finished yet (no DONE); finish it with 'dreamlmc train --resume {run}'")
    if not (run / "model.glb").exists():
        raise DreamlmcError(f"{run} has no model.glb; write it with 'dreamlmc export {run}'")


# ------------------------------------------------------------------------------------------------ plots (SVG)

def _nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def svg_plot(series: Dict[str, Tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
             log: bool = False, width: int = 460, height: int = 240) -> str:
    """Line plot of named (xs, ys) series as an inline SVG with axes, ticks, labels and a legend. Non-finite values
    (skipped steps) and, with log=True, non-positive values are left out."""
    left, right, top, bottom = 62, 12, 26, 44
    clean = {}
    for name, (xs, ys) in series.items():
        pts = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y))
               and (not log or float(y) > 0)]
        if len(pts) > 600:  # downsample for the page, keeping the ends
            stride = len(pts) / 600
            pts = [pts[int(i * stride)] for i in range(600)] + [pts[-1]]
        if pts:
            clean[name] = pts
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="plot" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{html.escape(title)}</text>']
    if not clean:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    xs = [p[0] for pts in clean.values() for p in pts]
    ys = [f(p[1]) for pts in clean.values() for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def X(v):
        return left + (v - x0) / (x1 - x0) * pw

    def Y(v):
        return top + ph - (v - y0) / (y1 - y0) * ph

    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in _nice_ticks(x0, x1):
        parts.append(f'<line x1="{X(t):.1f}" y1="{top + ph}" x2="{X(t):.1f}" y2="{top + ph + 4}" stroke="#666"/>'
                     f'<text x="{X(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    yticks = [t for t in _nice_ticks(math.floor(y0), math.ceil(y1), 4) if y0 <= t <= y1] if log else \
        _nice_ticks(y0, y1)
    for t in yticks:
        label = _fmt(10 ** t) if log else _fmt(t)
        parts.append(f'<line x1="{left - 4}" y1="{Y(t):.1f}" x2="{left + pw}" y2="{Y(t):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{label}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="14" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {top + ph / 2})">'
                 f'{html.escape(ylabel)}{" (log scale)" if log else ""}</text>')
    for i, (name, pts) in enumerate(clean.items()):
        c = COLOURS[i % len(COLOURS)]
        d = " ".join(f"{X(x):.1f},{Y(f(y)):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.2" points="{d}"/>')
        parts.append(f'<rect x="{left + 8}" y="{top + 6 + 14 * i}" width="10" height="3" fill="{c}"/>'
                     f'<text x="{left + 22}" y="{top + 11 + 14 * i}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ report.html

def _read_metrics(run: Path) -> List[Dict]:
    recs = []
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except ValueError:
                continue
    return recs


def _refinement(r: Dict) -> str:
    """The refinement stage's settings in a phrase (TrainConfig.refine)."""
    if r.get("start") is None:
        return "none"
    t = r.get("t_range") or ("?", "?")
    return (f"from {float(r['start']):.0%} of training: SDEdit targets at t {t[0]}-{t[1]}, {r.get('ddim_steps')} DDIM "
            f"steps at s = {r.get('guidance_scale')}; score distillation kept at {r.get('sds_weight')}")


def _series(recs: List[Dict], keys: Sequence[str], scale: float = 1.0) -> Dict[str, Tuple[List, List]]:
    out = {}
    for k in keys:
        pts = [(r["step"], r[k] * scale) for r in recs if r.get(k) is not None]
        if pts:
            out[k] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def _viewer_js() -> str:
    import dreamlmc.assets

    return (Path(dreamlmc.assets.__file__).parent / "web" / VIEWER_JS).read_text()


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .sub{color:#666;margin-bottom:16px}
table.kv td{padding:2px 12px 2px 0;vertical-align:top} table.kv td:first-child{color:#666}
table.runs{border-collapse:collapse} table.runs td,table.runs th{border-bottom:1px solid #ddd;padding:3px 8px;
text-align:left;font-size:13px} .row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
model-viewer{width:420px;height:420px;background:#f4f4f4;border-radius:6px}
.plot text{font-size:11px;fill:#333} .plot .title{font-size:13px;font-weight:600}
img.preview{width:100%;max-width:1000px;image-rendering:pixelated;border:1px solid #eee}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto;max-height:480px}
.grid{display:flex;flex-wrap:wrap;gap:12px} .tile{width:160px;font-size:12px;text-align:center}
.tile .thumb{width:160px;height:160px;background-size:800% 200%;background-position:0 0;
image-rendering:pixelated;border:1px solid #ddd;border-radius:4px} .bad{color:#c00}
"""


def write_report(run: Path) -> Path:
    """(Re)write RUN/report.html for a finished run; returns its path."""
    import yaml

    run = Path(run)
    check_run(run)
    cfg_text = (run / "config.yaml").read_text()
    cfg = yaml.safe_load(cfg_text) or {}
    g = cfg.get("guidance", {})
    field = cfg.get("renderer", {}).get("field", {})
    info = {}
    if (run / "run.json").exists():
        try:
            info = json.loads((run / "run.json").read_text())
        except ValueError:
            info = {}
    recs = _read_metrics(run)
    settings = [
        ("prompt", cfg.get("prompt")), ("guidance", f"{g.get('kind')}, scale s = {g.get('guidance_scale')}"),
        ("seed", cfg.get("seed")),
        ("noise", f"fixed ε, ε seed {g.get('eps_seed')}" if g.get("fixed_eps") else "fresh ε every step"),
        ("steps", cfg.get("steps")), ("views per step", cfg.get("batch_size")),
        ("refinement", _refinement(cfg.get("refine") or {})),
        ("prior", cfg.get("model") + (f" (weights {info['prior_fingerprint']})" if info.get("prior_fingerprint")
                                      else "")),
        ("geometry", field.get("geometry", "density")), ("device", cfg.get("device")),
        ("wall time", f"{info['wall_s']:.0f} s" if info.get("wall_s") is not None else "?"),
        ("peak RSS", f"{info['peak_rss_gib']:.2f} GiB" if info.get("peak_rss_gib") is not None else "?"),
        ("dreamlmc", info.get("dreamlmc", "?")),
    ]
    plots = [
        svg_plot(_series(recs, [k for k in ("loss", "loss_cond", "loss_lmc", "loss_proj", "loss_refine", "photometric")]),
                 "loss terms", "training step", "loss (reparameterised, a.u.)", log=True),
        svg_plot(_series(recs, ["t"]), "diffusion timestep", "training step", "t / T"),
        svg_plot(_series(recs, ["grad_norm", "grad_norm_cond", "grad_norm_second"]), "gradient norms on the image",
                 "training step", "L2 norm", log=True),
        svg_plot(_series(recs, ["seconds"], 1000.0), "time per step", "training step", "milliseconds"),
    ]
    glb = base64.b64encode((run / "model.glb").read_bytes()).decode()
    turntable = next((p.name for p in (run / "turntable.mp4", run / "turntable.gif") if p.exists()), None)
    media = ""
    if turntable and turntable.endswith(".mp4"):
        media = f'<video src="{turntable}" autoplay loop muted playsinline width="288"></video>'
    elif turntable:
        media = f'<img src="{turntable}" width="288" alt="turntable">'
    kv = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in settings)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dreamlmc: {html.escape(str(cfg.get('prompt')))}</title>
<style>{CSS}</style><script>{_viewer_js()}</script></head><body>
<h1>{html.escape(str(cfg.get('prompt')))}</h1>
<div class="sub">dreamlmc run {html.escape(run.resolve().name)}</div>
<div class="row">
<div><model-viewer id="viewer" src="data:model/gltf-binary;base64,{glb}" camera-controls auto-rotate
 touch-action="pan-y" exposure="1.0" shadow-intensity="0" alt="the generated 3D asset"></model-viewer>
<div><a href="model.glb" download>download model.glb</a> · drag to orbit, scroll to zoom</div></div>
<div><table class="kv">{kv}</table><h2>turntable</h2>{media}</div>
</div>
<h2>preview (top: shaded, bottom: textureless)</h2><img class="preview" src="preview.png" alt="preview">
<h2>training</h2><div class="row">{''.join(plots)}</div>
<h2>configuration</h2><details><summary>the full resolved config (config.yaml)</summary>
<pre>{html.escape(cfg_text)}</pre></details>
<script>
const mv = document.getElementById('viewer');
mv.addEventListener('load', () => {{ document.body.dataset.modelLoaded = '1'; }});
mv.addEventListener('error', (e) => {{ document.body.dataset.modelLoaded = 'error'; console.error('model-viewer', e); }});
</script>
</body></html>
"""
    path = run / "report.html"
    atomic_write_text(path, page)
    return path


# ------------------------------------------------------------------------------------------------ index.html

def write_index(folder: Path, summary: Optional[Dict] = None) -> Path:
    """folder/index.html: a grid of the runs' front views, each linking to its report, and the summary table
    (the batch's summary.json where present)."""
    folder = Path(folder)
    if summary is None and (folder / "summary.json").exists():
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except ValueError:
            summary = None
    runs = finished_runs(folder)
    tiles = []
    for r in runs:
        tiles.append(f'<a class="tile" href="{html.escape(r.name)}/report.html"><div class="thumb" '
                     f'style="background-image:url(\'{html.escape(r.name)}/preview.png\')"></div>'
                     f'{html.escape(r.name)}</a>')
    rows = summary.get("runs", []) if summary else [{"slug": r.name, "status": "ok"} for r in runs]
    cols = [c for c in ("slug", "prompt", "seed", "eps_seed", "status", "error", "seconds", "peak_rss_gib", "iou",
                        "nearest", "chamfer", "normal_consistency") if any(c in row for row in rows)]

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else html.escape(str(v))

    body = "".join("<tr" + (' class="bad"' if row.get("status", "ok") != "ok" else "") + ">" +
                   "".join(f"<td>{cell(row.get(c))}</td>" for c in cols) + "</tr>" for row in rows)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dreamlmc: {html.escape(folder.resolve().name)}</title>
<style>{CSS}</style></head><body><h1>{html.escape(folder.resolve().name)}</h1>
<div class="sub">{len(runs)} finished runs; click one for its report</div>
<div class="grid">{''.join(tiles)}</div>
<h2>summary</h2><table class="runs"><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{body}</table>
</body></html>
"""
    path = folder / "index.html"
    atomic_write_text(path, page)
    return path


def report_any(target: Path) -> List[Path]:
    """`dreamlmc report`: a finished run -> its report.html; a folder of finished runs -> every report and an
    index.html. Anything else is a one-line DreamlmcError."""
    target = Path(target)
    if target.is_dir() and not is_run(target):
        runs = finished_runs(target)
        if not runs:
            raise DreamlmcError(f"{target} holds no finished dreamlmc runs")
        out = [write_report(r) for r in runs]
        return out + [write_index(target)]
    return [write_report(target)]


# ------------------------------------------------------------------------------------------------ dreamlmc view

def serve(folder: Path, open_browser: bool = True, port: int = 0, log=print) -> None:
    """Serve `folder` on localhost (a free port by default) until Ctrl-C; opens a browser where one exists."""
    import functools
    import threading

    folder = Path(folder)
    page = "report.html" if is_run(folder) else "index.html"
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
    log(f"serving {folder} at {url} (Ctrl-C stops)")
    if open_browser:
        threading.Thread(target=_open_browser, args=(url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()


def _open_browser(url: str) -> None:
    import os
    import sys
    import webbrowser

    # headless Linux (no display): no browser to open; the printed URL is the way in
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    try:
        webbrowser.open(url)
    except Exception:  # noqa: BLE001 - no browser is fine
        pass


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler without a log line per request."""

    def log_message(self, format, *args):  # noqa: A002
        pass
