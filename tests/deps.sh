#!/usr/bin/env bash
# Installs the Debian packages that building, testing and the demo need.
# Idempotent: does nothing when every package is present. Needs root (or sudo).
set -euo pipefail

packages=(
  gcc libc6-dev pkg-config   # the zstd crate builds its C library
  grub-common                # grub-editenv: grubenv compatibility tests
  squashfs-tools erofs-utils e2fsprogs   # filesystems built from directories
  util-linux mount           # losetup, mount: loop-device slots
  time bc                    # /usr/bin/time, bc: benchmarks
  gdisk mtools dosfstools grub-efi-amd64-bin   # flipslot-image disk
  qemu-system-x86 ovmf busybox-static cpio kmod   # the QEMU rig
  ipxe-qemu                  # the NIC boot ROMs QEMU netboots with (provisioning)
  mmdebstrap                 # the systemd guest of the rig
  nginx openssl              # network install tests
  curl ca-certificates
  rauc dbus                  # RAUC compatibility: real `rauc bundle`/`rauc info`, its benchmark
  libubootenv-tool           # fw_printenv/fw_setenv: U-Boot environment compatibility
  cryptsetup-bin             # veritysetup: dm-verity hash trees of RAUC verity bundles
  u-boot-tools               # mkimage: the reference U-Boot boot script compiles
  ansible-core               # ansible-playbook: examples/ansible/rollout.yml run against localhost
  python3 python3-venv       # tests/pydeps.sh: the venv of the Yocto layer's linters; its .inc generator
  umoci skopeo               # container images made by real tools for build --oci (OCI layouts, docker-archive)
  dpkg-dev binutils lintian man-db   # the Debian packages: dpkg-shlibdeps, strip, lintian, man
)

missing=()
for p in "${packages[@]}"; do
  [[ $p == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "deps: cargo not found: install a Rust toolchain (https://rustup.rs) and run again" >&2
  exit 1
fi
