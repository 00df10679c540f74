"""Open a run's report.html in headless Chromium (Playwright driving the system's Chromium): wait for the 3D viewer's
load event, collect console errors, and screenshot the viewer (and optionally the whole page).

    python tools/browser_check.py RUN_DIR/report.html [--screenshot page.png]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

# software WebGL (SwiftShader) in a headless browser with no GPU; no background traffic on a closed network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_report(report: Path, viewer_png: Path, page_png: Optional[Path] = None, timeout_ms: int = 90_000) -> Dict:
    """-> {"loaded": "1" | "error" | None, "errors": [console errors]}; writes the viewer's screenshot."""
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found (install Debian's chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(Path(report).resolve().as_uri())
            page.wait_for_function("document.body.dataset.modelLoaded !== undefined", timeout=timeout_ms)
            loaded = page.evaluate("document.body.dataset.modelLoaded")
            page.wait_for_timeout(1500)  # let the first frames render
            page.locator("#viewer").screenshot(path=str(viewer_png))
            if page_png is not None:
                page.screenshot(path=str(page_png), full_page=True)
        finally:
            browser.close()
    return {"loaded": loaded, "errors": errors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--viewer", type=Path, default=None,
                    help="keep the viewer's screenshot here (default: a temporary file, removed)")
    ap.add_argument("--screenshot", type=Path, default=None, help="also a full-page screenshot here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = check_report(args.report, args.viewer or Path(tmp) / "viewer.png", args.screenshot)
    print(json.dumps(r))
    return 0 if r["loaded"] == "1" and not r["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
