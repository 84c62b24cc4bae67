#!/usr/bin/env bash
# kforge's main job on a fresh Debian machine, in one command:
#   installs what is missing, builds kforge, prepares a local kernel mirror from the
#   distro's kernel source when none is configured, builds a kernel, boots it in QEMU
#   and checks it, and prints its manifest.
#
#   scripts/quickstart.sh [extra `kforge build` arguments]
#
# stdout carries the manifest and nothing else (`scripts/quickstart.sh | jq .uts_release`);
# what is installed and built on the way is reported on stderr.
#
# Defaults to the library's smallest guest preset (a few minutes on 2 cores); pass e.g.
# `--preset imageless_defconfig` for the default guest kernel. State goes to kforge's XDG
# directories (~/.local/share/kforge, ~/.cache/kforge) unless KFORGE_* variables say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >&2
cargo build --locked --release >&2
kforge=$PWD/target/release/kforge

if ! "$kforge" mirror show >/dev/null 2>&1; then
  tarball=$(ls -1 /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z $tarball ]]; then
    echo "quickstart: no mirror and no /usr/src/linux-source-*.tar.xz" >&2
    exit 1
  fi
  version=$(basename "$tarball" .tar.xz)
  version=${version#linux-source-}
  # The tag carries the full version from the tarball's Makefile.
  full=$(tar -xOf "$tarball" --wildcards '*/Makefile' --exclude='*/*/*' 2>/dev/null \
    | awk '/^VERSION =/{a=$3} /^PATCHLEVEL =/{b=$3} /^SUBLEVEL =/{c=$3; exit} END{print a"."b"."c}' || true)
  [[ $full =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || full=$version
  echo "quickstart: no kernel mirror yet; importing $tarball as v$full" >&2
  "$kforge" mirror import-tarball "$tarball" --tag "v$full" --branch master >&2
fi

if [[ $# -eq 0 ]]; then
  set -- --preset tiny_guest_defconfig
fi
# Build, then boot the kernel in QEMU with its modules over virtiofs and check that the
# guest's `uname -r` is the build identity and a module loads from the share.
exec "$kforge" build --boot "$@"
