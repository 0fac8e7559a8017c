"""Vendors the console's JavaScript libraries from the npm registry into strait_server/console/static/vendor, so
that the console loads nothing from a CDN at run time.

    python scripts/vendor_console.py          # fetch the pinned versions and write the files
    python scripts/vendor_console.py --check  # fail when the committed files differ from the pinned packages

Needs npm (it runs `npm pack`, which downloads a package's tarball without installing anything).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "strait_server" / "console" / "static" / "vendor"
# package@version -> (file in the tarball, file written here). Pinned: bump deliberately, then run this.
FILES = {
    "htmx.org@2.0.11": [("package/dist/htmx.min.js", "htmx.min.js"), ("package/LICENSE", "htmx.LICENSE")],
    "htmx-ext-sse@2.2.4": [("package/dist/sse.min.js", "htmx-sse.min.js"), ("package/LICENSE", "htmx-sse.LICENSE")],
}


def packed() -> dict[str, bytes]:
    """The files FILES names, read from `npm pack` tarballs."""
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec, members in FILES.items():
            name = subprocess.run(["npm", "pack", "--silent", spec], cwd=tmp, check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(Path(tmp) / name) as tar:
                for member, target in members:
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        raise SystemExit(f"{spec}: no {member} in the package")
                    out[target] = extracted.read()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    files = packed()
    if args.check:
        stale = [name for name, data in files.items()
                 if not (VENDOR / name).exists() or (VENDOR / name).read_bytes() != data]
        if stale:
            print(f"vendored console files differ from the pinned packages: {', '.join(stale)}; "
                  "run python scripts/vendor_console.py", file=sys.stderr)
            return 1
        print("vendored console files are up to date")
        return 0
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (VENDOR / name).write_bytes(data)
    print(f"wrote {len(files)} files to {VENDOR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
