#!/usr/bin/env bash
# Installs the system packages kforge and its test suite drive, on Debian/Ubuntu.
# Idempotent: only missing packages are installed. Run as root (or with sudo).
set -euo pipefail

PKGS=(
  # git and the kernel build (see the README's "What kforge drives"); rsync for the
  # kernel's headers_install and kselftest's install (kforge test kselftest)
  git make gcc libc6-dev build-essential flex bison bc libelf-dev libssl-dev
  cpio kmod xz-utils python3 rsync
  # the benchmark (scripts/bench.sh): JSON on the command line, a venv for tuxmake and virtme-ng
  jq python3-venv
  # clang/LLVM toolchain (compiler=clang)
  clang lld llvm
  # compile cache (b4, for mailed series, comes from PyPI below)
  ccache
  # a shared remote compile cache (tests/remote_cache.rs runs a real one on loopback)
  redis-server
  # the guest layer: QEMU, a static busybox for the initramfs, virtiofsd's build deps,
  # systemd (guests run as qemu-system@<vm>.service; the tests run one in a namespace)
  qemu-system-x86 busybox-static libcap-ng-dev libseccomp-dev systemd util-linux
  # other architectures (--arch arm64|riscv64): Debian's cross compilers, their QEMU system
  # emulators and RISC-V's firmware (OpenSBI); their busyboxes come at the end
  gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu qemu-system-arm qemu-system-misc opensbi
  # kforge run/shell --gdb: gdb attaches to QEMU's gdbstub (a test attaches one)
  gdb
  # kforge repro: diffoscope's report on a file that differs between build and rebuild
  diffoscope-minimal
  # the kernel source the fixture mirror is made from
  linux-source-6.12
  # building QEMU (kforge qemu build): meson, ninja and the libraries of the minimal
  # feature set; firmware for a built QEMU comes from Debian's packages (--firmwarepath).
  # The QEMU fixture fetches Debian's qemu source package with apt-get and applies its
  # patches with GNU patch.
  ninja-build meson pkg-config libglib2.0-dev libpixman-1-dev zlib1g-dev libfdt-dev
  seabios qemu-system-data ipxe-qemu patch debian-archive-keyring
)

# Node.js runs the offline checks of the Windmill flow (windmill/validate.mjs,
# windmill/run-local.mjs); a node already on PATH (from elsewhere than apt) is fine.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=()
  [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  # (dpkg reports on stdout; a caller's stdout is its own, e.g. quickstart's manifest)
  "${SUDO[@]}" apt-get update -qq >&2
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "install-deps: all packages present" >&2
fi

# b4 for mailed series, pinned, from PyPI into a virtual environment of its own: Debian 12's
# b4 0.12 crashes (`save_cover`: "Header values may not contain linefeed") on a thread whose
# From: header is folded, which git format-patch writes for a long name.
B4_VERSION=0.16.0
b4_venv=/opt/kforge/b4-$B4_VERSION
if [[ $(/usr/local/bin/b4 --version 2>/dev/null) != "$B4_VERSION" ]]; then
  echo "install-deps: b4 $B4_VERSION from PyPI into $b4_venv" >&2
  SUDO=()
  [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" /usr/bin/python3 -m venv "$b4_venv"
  "${SUDO[@]}" "$b4_venv/bin/pip" install --quiet --disable-pip-version-check "b4==$B4_VERSION" >&2
  "${SUDO[@]}" ln -sf "$b4_venv/bin/b4" /usr/local/bin/b4
fi

# The system user guests' QEMU (and the modules' virtiofsd of a defined guest) run as, with
# nothing but its own group: kforge hands it what a guest needs.
if ! id kforge-guest >/dev/null 2>&1; then
  echo "install-deps: adding the system user kforge-guest" >&2
  SUDO=()
  [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "kforge guests" kforge-guest
fi

# virtiofsd is not packaged in Debian 12: build it from crates.io (about a minute).
if ! command -v virtiofsd >/dev/null && [[ ! -x ${HOME:-/root}/.cargo/bin/virtiofsd ]] \
  && [[ ! -x /usr/libexec/virtiofsd ]]; then
  echo "install-deps: cargo install virtiofsd" >&2
  cargo install --locked --quiet virtiofsd >&2
fi

# A static busybox of each other architecture for its guests' initramfs: Debian's
# busybox-static for that arch, downloaded with a private apt configuration (the host's
# sources and dpkg's architectures are not touched) and checked to be a static executable of
# that arch before it is installed. Debian 12 has no riscv64 port: that busybox comes from
# Debian 13, as static as any.
busybox_dir=/usr/local/lib/kforge
elf_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' '; }
for spec in arm64:bookworm:183 riscv64:trixie:243; do
  IFS=: read -r darch suite machine <<<"$spec"
  dest=$busybox_dir/busybox-$darch
  [[ -x $dest && $(elf_machine "$dest") == "$machine" ]] && continue
  echo "install-deps: Debian's busybox-static:$darch ($suite) into $dest" >&2
  apt_dir=$(mktemp -d)
  mkdir -p "$apt_dir/lists/partial"
  printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: $suite" \
    "Components: main" "Architectures: $darch" \
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$apt_dir/debian.sources"
  apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir"
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::pkgcache="
            -o "Dir::Cache::srcpkgcache=" -o "APT::Architectures::=$darch"
            -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" -qq update >&2
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" -qq download "busybox-static:$darch" >&2)
  deb=$(ls "$apt_dir"/busybox-static_*_"$darch".deb)
  dpkg-deb -x "$deb" "$apt_dir/root"
  # (/bin in Debian 12, /usr/bin since the merged /usr)
  bb=$apt_dir/root/bin/busybox
  [[ -f $bb ]] || bb=$apt_dir/root/usr/bin/busybox
  if [[ $(elf_machine "$bb") != "$machine" ]] || readelf -l "$bb" | grep -q INTERP; then
    echo "install-deps: $deb holds no static $darch busybox" >&2
    exit 1
  fi
  SUDO=()
  [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" install -D -m 0755 "$bb" "$dest"
  rm -rf "$apt_dir"
done
