#!/usr/bin/env python3
"""Writes meta-flipslot's flipslot-crates.inc from the workspace's Cargo.lock.

Every crates.io package in Cargo.lock becomes a crate://crates.io/NAME/VERSION entry of
SRC_URI, with the lock file's checksum as SRC_URI[NAME-VERSION.sha256sum]: what bitbake's
crate fetcher downloads and checks, and what cargo then finds vendored (the recipes build
with --frozen, so every locked package must be there, whatever platform it is for).

Usage, from anywhere in the repository:
    yocto-layer/scripts/gen-crates-inc.py             # rewrite the layer's file
    yocto-layer/scripts/gen-crates-inc.py --output F  # write F instead
    yocto-layer/scripts/gen-crates-inc.py --check     # exit 1 when the file is stale

Python 3.11 or newer (tomllib), standard library only.
"""

import argparse
import os
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LOCK = os.path.join(REPO, "Cargo.lock")
INC = os.path.join(
    REPO, "yocto-layer", "meta-flipslot", "recipes-core", "flipslot", "flipslot-crates.inc"
)
HEADER = """\
# Generated from Cargo.lock by yocto-layer/scripts/gen-crates-inc.py: do not edit, run it
# after every change of Cargo.lock (tests/tests/yocto_layer.rs fails until then).
"""


def render(lock_path):
    """The .inc text for the lock file at lock_path."""
    with open(lock_path, "rb") as f:
        lock = tomllib.load(f)
    crates = [p for p in lock.get("package", []) if "crates.io" in p.get("source", "")]
    if not crates:
        raise SystemExit(f"{lock_path}: no crates.io packages")
    uris = []
    sums = []
    for c in crates:
        name, version = c["name"], c["version"]
        if "checksum" not in c:
            raise SystemExit(f"{lock_path}: {name} {version} has no checksum")
        uris.append(f"    crate://crates.io/{name}/{version} \\\n")
        sums.append(f'SRC_URI[{name}-{version}.sha256sum] = "{c["checksum"]}"\n')
    return HEADER + '\nSRC_URI += "\\\n' + "".join(uris) + '"\n\n' + "".join(sums)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write here instead of the layer's flipslot-crates.inc")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args()
    text = render(LOCK)
    if args.check:
        with open(INC, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{os.path.relpath(INC, REPO)} is stale: run "
                      f"{os.path.relpath(__file__, REPO)}", file=sys.stderr)
                return 1
        return 0
    path = args.output or INC
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
