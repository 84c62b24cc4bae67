#!/usr/bin/env bash
# The developer's loop, side by side in one run: edit one .c file, build, run `uname -r` in
# the guest. kforge (`kforge build` in the worktree, then `kforge run -- uname -r`) against
# virtme-ng (`vng -b`, then `vng -- uname -r`) against the plain make + QEMU script a
# developer writes, each in its own clone of the same commit with the same .config,
# alternating the order, N rounds; then `kforge run -- true` on the last build, N times.
# Writes the section "The developer's loop" of docs/benchmarks.md.
#
#   scripts/bench-devloop.sh                      # imageless_defconfig, 3 rounds
#   BENCH_ROUNDS=5 BENCH_PRESET=imageless_defconfig scripts/bench-devloop.sh
#   BENCH_REUSE=/var/tmp/kforge-devloop.XXXXXX scripts/bench-devloop.sh
#       # the rounds again on an earlier run's trees (its cold builds done, the edits undone)
#
# The config must run the host's userspace for virtme-ng (imageless_defconfig does; the tiny
# test preset does not). Setting up compiles the kernel cold three times (once per tool).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${BENCH_ROUNDS:-3}
preset=${BENCH_PRESET:-imageless_defconfig}
venv=${BENCH_VENV:-/var/tmp/kforge-bench-venv}
reuse=${BENCH_REUSE:-}
work=${reuse:-$(mktemp -d "${TMPDIR:-/var/tmp}/kforge-devloop.XXXXXX")}
# Kept when the bench fails, for its logs.
trap 'if [[ $? == 0 ]]; then rm -rf "$work"; else echo "bench-devloop: failed; logs in $work" >&2; fi' EXIT
jobs=$(nproc)

cargo build --locked --release
kforge=$root/target/release/kforge
fixture=$(bash scripts/fixture-mirror.sh "$kforge")
tag=$(git --git-dir="$fixture" describe --tags --abbrev=0 master)
if [[ ! -x $venv/bin/vng ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet virtme-ng
fi
# virtme-ng runs its helpers (virtme-configkernel, virtme-run) from PATH.
export PATH="$venv/bin:$PATH"
vng_version=$(vng --version 2>&1 | head -n 1)
busybox=$(command -v busybox)

# kforge's own home, on a copy of the fixture mirror (worktree snapshots are pushed into it),
# with a cache of its own.
. scripts/bench-lib.sh
say() { echo "bench-devloop: $*" >&2; }
plain_loop() {
  make -C "$work/plain" -j"$jobs" LOCALVERSION= >"$work/plain.log" 2>&1 || return 1
  rm -rf "$work/plain-mods"
  make -C "$work/plain" INSTALL_MOD_PATH="$work/plain-mods" modules_install >>"$work/plain.log" 2>&1 || return 1
  timeout 120 qemu-system-x86_64 -accel "$accel" -m 512 -nographic -no-reboot \
    -kernel "$work/plain/arch/x86/boot/bzImage" -initrd "$work/initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1" </dev/null | tr -d '\r' | sed -n 's/.*PLAIN-UNAME //p'
}
export KFORGE_SYSTEM_DIR=$work/kforge-home KFORGE_MIRROR=$work/mirror.git KFORGE_CCACHE_DIR=$work/ccache
unset KFORGE_WORKERS_DIR KFORGE_WORKER_INDEX KFORGE_STORE KFORGE_CONFIG KFORGE_LIBRARY
if [[ -n $reuse ]]; then
  # The trees as their cold builds left them: the rounds' edits undone (each tool's next
  # build compiles kernel/sys.c again, as after any edit).
  for t in kforge vng plain; do
    sed -i '/kforge_bench_edit/d' "$work/$t/kernel/sys.c"
    sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$work/$t/kernel/sys.c"
  done
  accel=$("$kforge" boot --check "$work/k.json" 2>/dev/null | jq -r .accel)
  vng_accel=()
  [[ $accel == tcg ]] && vng_accel=(--disable-kvm)
else
git clone --quiet --mirror --shared "$fixture" "$work/mirror.git"
for t in kforge vng plain; do
  git clone --quiet --shared "$work/mirror.git" "$work/$t"
  git -C "$work/$t" checkout --quiet -b dev-loop "$tag"
done

# Setup: one cold build per tool, the same .config for all three (kforge's).
say "cold builds: kforge ($preset), then virtme-ng and plain make with its .config"
t=$(now)
(cd "$work/kforge" && "$kforge" -q build --preset "$preset") >"$work/k.json"
cold_kforge=$(elapsed "$t")
config=$(jq -r .config "$work/k.json")
accel=$("$kforge" boot --check "$work/k.json" 2>/dev/null | jq -r .accel)
vng_accel=()
[[ $accel == tcg ]] && vng_accel=(--disable-kvm)
cp "$config" "$work/vng/.config"
cp "$config" "$work/plain/.config"
t=$(now)
(cd "$work/vng" && vng --build --jobs "$jobs") >"$work/vng-build.log" 2>&1
cold_vng=$(elapsed "$t")

# The plain script: make, install the modules beside the tree, boot the bzImage with a
# busybox initramfs whose /init prints `uname -r` and reboots (QEMU exits: -no-reboot).
mkdir -p "$work/initramfs/bin" "$work/initramfs/proc"
cp "$busybox" "$work/initramfs/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho "PLAIN-UNAME $(/bin/busybox uname -r)"\n/bin/busybox reboot -f\n' >"$work/initramfs/init"
chmod +x "$work/initramfs/init"
(cd "$work/initramfs" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"
t=$(now)
plain_loop >/dev/null
cold_plain=$(elapsed "$t")
fi

# One round's edit, the same in every tree: a new string in a file every config compiles.
edit() {
  printf '\nstatic const char kforge_bench_edit_%s[] __used = "round %s";\n' "$2" "$2" >>"$1/kernel/sys.c"
}
kforge_loop() {
  (cd "$work/kforge" && "$kforge" -q build --preset "$preset" >"$work/k.json" 2>"$work/kforge.log" &&
    "$kforge" -q run --accel "$accel" -- uname -r 2>>"$work/kforge.log")
}
vng_loop() {
  # (not on a terminal, vng prints the command's output only with --verbose; its exit status
  # is the guest's power-off, not the command's: the printed release is what is checked)
  (cd "$work/vng" && vng --build --jobs "$jobs" >"$work/vng.log" 2>&1 &&
    { vng "${vng_accel[@]}" --verbose -- uname -r 2>&1 || true; } | tee -a "$work/vng.log") | tr -d '\r'
}

declare -A secs
for i in $(seq "$rounds"); do
  order=(kforge vng plain)
  ((i % 2 == 0)) && order=(plain vng kforge)
  for tool in "${order[@]}"; do
    t=$(now)
    edit "$work/$tool" "$i"
    out=$("${tool}_loop") || { say "$tool round $i failed; the end of its log:"; tail -n 20 "$work/$tool.log" >&2; exit 1; }
    s=$(elapsed "$t")
    case $tool in
      kforge) want=$(jq -r .uts_release "$work/k.json") ;;
      vng) want=$(cat "$work/vng/include/config/kernel.release") ;;
      plain) want=$(cat "$work/plain/include/config/kernel.release") ;;
    esac
    grep -qx "$want" <<<"$out" || { say "$tool round $i: the guest did not print $want:"; echo "$out" >&2; exit 1; }
    secs[$tool]+="$s "
    say "round $i: $tool $s s ($want)"
  done
done

trues=()
for i in $(seq 5); do
  t=$(now)
  (cd "$work/kforge" && "$kforge" -q run --accel "$accel" -- true)
  trues+=("$(BENCH_DIGITS=2 elapsed "$t")")
done

# shellcheck disable=SC2086
section=$(
  echo "## The developer's loop"
  echo
  echo "Written by \`scripts/bench-devloop.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores): $tag,"
  echo "\`$preset\` (one .config for all three), gcc, accel $accel, $rounds rounds alternating."
  echo "A round: append a new string constant to kernel/sys.c, build, run \`uname -r\` in the guest"
  echo "(the printed release checked); seconds from the edit to the printed release."
  echo
  echo "| round | kforge build + kforge run | vng -b + vng -- uname -r | plain make + QEMU script |"
  echo "|---:|---:|---:|---:|"
  read -ra k <<<"${secs[kforge]}"; read -ra v <<<"${secs[vng]}"; read -ra p <<<"${secs[plain]}"
  for i in $(seq 0 $((rounds - 1))); do
    echo "| $((i + 1)) | ${k[$i]} | ${v[$i]} | ${p[$i]} |"
  done
  echo "| median | $(median "${k[@]}") | $(median "${v[@]}") | $(median "${p[@]}") |"
  echo
  if [[ -n $reuse ]]; then
    echo "The trees of an earlier run of this script, their cold builds done (not timed here)."
    echo "$vng_version runs the host's root filesystem"
  else
    echo "Cold setup (each tool once, its own clone): kforge $cold_kforge s (ccache cold), virtme-ng"
    echo "$cold_vng s, plain make $cold_plain s. $vng_version runs the host's root filesystem"
  fi
  echo "${vng_accel[*]:+(${vng_accel[*]})}; kforge runs its initramfs with the modules and this directory over virtiofs;"
  echo "the plain script boots a busybox initramfs that prints \`uname -r\`."
  echo
  echo "\`kforge run -- true\` on the last build, 5 runs: $(printf '%s ' "${trues[@]}")s, median"
  echo "**$(BENCH_DIGITS=2 median "${trues[@]}") s** (target: under 1.5 s)."
)
write_section "$root/docs/benchmarks.md" "$section"
echo "$section"
