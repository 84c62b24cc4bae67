#!/usr/bin/env bash
# Other architectures, side by side in one run: the arm64 tiny guest built and boot-checked by
# kforge (Debian's cross gcc, TCG) beside the x86_64 tiny guest the same way, against
# tuxmake's arm64 build of the same .config (`--target-arch arm64 --runtime null`, build
# only: tuxmake does not boot) and a plain script (make with CROSS_COMPILE, the modules in a
# busybox initramfs of that arch, qemu-system-aarch64, `uname -r` checked). Each from a cold
# start (kforge: an empty home and compiler cache; the others: a fresh clone), alternating
# the order, N rounds, medians. Writes the section "Other architectures" of
# docs/benchmarks.md.
#
#   scripts/bench-arch.sh            BENCH_ROUNDS=3 scripts/bench-arch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${BENCH_ROUNDS:-2}
venv=${BENCH_VENV:-/var/tmp/kforge-bench-venv}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/kforge-arch.XXXXXX")
trap 'if [[ $? == 0 ]]; then rm -rf "$work"; else echo "bench-arch: failed; logs in $work" >&2; fi' EXIT
jobs=$(nproc)

cargo build --locked --release
kforge=$root/target/release/kforge
mirror=$(bash scripts/fixture-mirror.sh "$kforge")
tag=$(git --git-dir="$mirror" describe --tags --abbrev=0 master)
if [[ ! -x $venv/bin/tuxmake ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tuxmake
fi
tux_version=$("$venv/bin/tuxmake" --version 2>&1 | head -n 1)
export KFORGE_MIRROR=$mirror KFORGE_CONFIG=/nonexistent KFORGE_LIBRARY=$root/kconfig-library
unset KFORGE_WORKERS_DIR KFORGE_WORKER_INDEX KFORGE_STORE KFORGE_SYSTEM_DIR KFORGE_CCACHE_DIR
. scripts/bench-lib.sh
say() { echo "bench-arch: $*" >&2; }

# The .config all three build: kforge's arm64 tiny preset at the tag (Kconfig only), with an
# empty LOCALVERSION for the others (kforge's release carries its identity).
arm_config=$(KFORGE_SYSTEM_DIR=$work/config-home KFORGE_CCACHE_DIR=$work/config-ccache \
  "$kforge" -q identity "$tag" --arch arm64 --preset tiny_guest_defconfig | jq -r .config)
grep -v '^CONFIG_LOCALVERSION=' "$arm_config" >"$work/config"
echo 'CONFIG_LOCALVERSION=""' >>"$work/config"

# The plain script's initramfs: the arm64 busybox kforge's guests use; /init prints uname -r
# and loads a module from what the script installs into it.
busybox=/usr/local/lib/kforge/busybox-arm64
[[ -x $busybox ]] || { say "no $busybox: run scripts/install-deps.sh"; exit 1; }
mkdir -p "$work/initramfs/bin" "$work/initramfs/proc" "$work/initramfs/sys"
cp "$busybox" "$work/initramfs/bin/busybox"
cat >"$work/initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
echo "PLAIN-UNAME $(/bin/busybox uname -r)"
/bin/busybox modprobe nls_utf8 && echo PLAIN-MODULE
/bin/busybox reboot -f
EOF
chmod +x "$work/initramfs/init"

kforge_round() { # kforge_round ARCH: a cold build and boot check; the report's release checked
  rm -rf "$work/home" "$work/ccache"
  KFORGE_SYSTEM_DIR=$work/home KFORGE_CCACHE_DIR=$work/ccache "$kforge" build "$tag" \
    --arch "$1" --preset tiny_guest_defconfig --boot --accel tcg >"$work/k-$1.json" 2>"$work/k-$1.log"
  grep -q "uname -r in the guest: $(jq -r .uts_release "$work/k-$1.json");" "$work/k-$1.log"
}
kforge_arm64() { kforge_round arm64; }
kforge_x86_64() { kforge_round x86_64; }
fresh_tree() {
  rm -rf "$work/tree" "$work/out"
  git clone --quiet --shared --no-checkout "$mirror" "$work/tree"
  git -C "$work/tree" checkout --quiet --detach "$tag"
}
tuxmake_arm64() {
  fresh_tree
  "$venv/bin/tuxmake" --runtime null --target-arch arm64 --toolchain gcc --jobs "$jobs" \
    --directory "$work/tree" --output-dir "$work/out" --build-dir "$work/tux-build" \
    --kconfig "$work/config" config kernel modules >"$work/tux.log" 2>&1
  rm -rf "$work/tux-build"
}
plain_arm64() {
  fresh_tree
  local make=(make -C "$work/tree" O="$work/out" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- -j"$jobs")
  mkdir -p "$work/out" && cp "$work/config" "$work/out/.config"
  { "${make[@]}" olddefconfig && "${make[@]}" Image modules; } >"$work/plain.log" 2>&1
  rm -rf "$work/ramfs" && cp -a "$work/initramfs" "$work/ramfs"
  "${make[@]}" INSTALL_MOD_PATH="$work/ramfs" modules_install >>"$work/plain.log" 2>&1
  (cd "$work/ramfs" && find . | cpio -o -H newc --quiet) >"$work/ramfs.cpio"
  local release
  release=$(cat "$work/out/include/config/kernel.release")
  timeout 300 qemu-system-aarch64 -M virt -cpu cortex-a57 -accel tcg -m 512 -nographic \
    -no-reboot -kernel "$work/out/arch/arm64/boot/Image" -initrd "$work/ramfs.cpio" \
    -append "console=ttyAMA0 quiet panic=-1" </dev/null | tr -d '\r' >"$work/plain-boot.log"
  grep -qx "PLAIN-UNAME $release" "$work/plain-boot.log" && grep -qx PLAIN-MODULE "$work/plain-boot.log"
}

tools=(kforge_arm64 tuxmake_arm64 plain_arm64 kforge_x86_64)
declare -A secs
for i in $(seq "$rounds"); do
  order=("${tools[@]}")
  ((i % 2 == 0)) && order=(kforge_x86_64 plain_arm64 tuxmake_arm64 kforge_arm64)
  for tool in "${order[@]}"; do
    t=$(now)
    "$tool" || { say "$tool failed in round $i"; exit 1; }
    secs[$tool]+="$(elapsed "$t") "
    say "round $i: $tool $(elapsed "$t") s"
  done
done

row() { # row TOOL LABEL WHAT
  local -a v
  read -r -a v <<<"${secs[$1]}"
  echo "| $2 | $3 | $(printf '%s / ' "${v[@]}" | sed 's| / $||') | **$(median "${v[@]}")** |"
}
section=$(
  echo "## Other architectures"
  echo
  echo "Written by \`scripts/bench-arch.sh\` on $(date -u +%Y-%m-%d) ($jobs cores): the tiny guest preset at"
  echo "$tag, each from a cold start (kforge: an empty home and compiler cache; tuxmake and the"
  echo "plain script: a fresh clone of the mirror), $rounds rounds alternating the order; seconds of"
  echo "wall time. Guests boot under TCG."
  echo
  echo "| who | what | rounds | median |"
  echo "|---|---|---:|---:|"
  row kforge_arm64 "kforge arm64 (gcc-aarch64-linux-gnu)" "build, install, publish, boot check (uname -r, a module)"
  row plain_arm64 "make + qemu-system-aarch64 script" "olddefconfig, Image + modules, initramfs, boot, uname -r and a module checked"
  row tuxmake_arm64 "tuxmake arm64 ($tux_version)" "\`--target-arch arm64 --runtime null\`: config, kernel, modules; no boot"
  row kforge_x86_64 "kforge x86_64" "build, install, publish, boot check"
  echo
  echo "tuxmake and the plain script build kforge's arm64 .config (its tiny preset, LOCALVERSION"
  echo "emptied); kforge's own build also runs its cold ccache, installs and publishes to the store,"
  echo "and writes the compilation database."
)
write_section "$root/docs/benchmarks.md" "$section"
echo "$section"
