#!/usr/bin/env bash
# Builds the Debian packages of flipslot into $CARGO_TARGET_DIR/debian (default
# target/debian): flipslot_<version>_<arch>.deb (the agent) and
# flipslot-image_<version>_<arch>.deb (the build-host tools). See docs/packaging.md.
#
# 1. cargo-deb, pinned, from tests/tooldeps.sh (built once);
# 2. the release binaries;
# 3. the man pages and shell completions, generated from the clap definitions by
#    tools/gen-docs into target/release/gen-docs (where the packages' assets look);
# 4. one cargo-deb run per package, with what was built (--no-build), binaries stripped.
#
# Prints the path of each package on the last lines of its output.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
case $target in /*) ;; *) target="$PWD/$target" ;; esac
export CARGO_TARGET_DIR="$target"

cargo="${CARGO:-cargo}"

tests/tooldeps.sh
export PATH="$target/tools/bin:$PATH"

echo "== cargo build --release (flipslot, flipslot-image)"
"$cargo" build --release --locked --quiet -p flipslot -p flipslot-image

echo "== man pages and completions"
# The pages carry the date of the newest Debian changelog entry: a rebuild is identical.
date=$(date -u -d "$(dpkg-parsechangelog -l packaging/debian/changelog -S Date)" +%F)
"$cargo" run --locked --quiet -p flipslot-gen-docs -- \
  --gzip --date "$date" --out "$target/release/gen-docs"

out="$target/debian"
mkdir -p "$out"
debs=()
for package in flipslot flipslot-image; do
  echo "== cargo deb -p $package"
  debs+=("$("$cargo" deb --locked --quiet --no-build --strip -p "$package" --output "$out/")")
done
printf '%s\n' "${debs[@]}"
