"""Copy the front-end libraries from node_modules into viewer/static/vendor/ (git-ignored).

Run after `npm ci`:  python scripts/build_assets.py
The wheel carries viewer/static (vendor included when built), so pip users need no npm.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "viewer" / "static" / "vendor"
FILES = {
    "node_modules/uplot/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "node_modules/uplot/dist/uPlot.min.css": "uPlot.min.css",
    "node_modules/uplot/LICENSE": "uPlot.LICENSE",
}


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    for source, target in FILES.items():
        path = ROOT / source
        if not path.is_file():
            print(f"build_assets: {source} is missing: run `npm ci` first", file=sys.stderr)
            return 1
        shutil.copyfile(path, VENDOR / target)
    print(f"build_assets: copied {len(FILES)} files into {VENDOR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
