#!/usr/bin/env bash
# Installs the cargo tools that packaging and its test need, pinned, under
# $CARGO_TARGET_DIR/tools (default target/tools): cargo-deb builds the Debian packages.
# Idempotent: does nothing when the pinned version is already there. Needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Bump deliberately: the packages' layout and maintainer scripts depend on it.
CARGO_DEB_VERSION=3.8.0

target="${CARGO_TARGET_DIR:-$PWD/target}"
tools="$target/tools"
bin="$tools/bin/cargo-deb"

if [[ -x $bin ]] && [[ $("$bin" --version 2>/dev/null) == "cargo-deb $CARGO_DEB_VERSION"* ]]; then
  exit 0
fi

echo "tooldeps: building cargo-deb $CARGO_DEB_VERSION into $tools (a few minutes, once)"
# Its own target directory, so the build is cached apart from the workspace's.
CARGO_TARGET_DIR="$tools/build" cargo install --locked --quiet --force \
  --root "$tools" "cargo-deb@$CARGO_DEB_VERSION"
