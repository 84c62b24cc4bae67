#!/usr/bin/env bash
# Bisect, side by side in one run, on the fixture mirror's test/bisect history (16 commits:
# one outside the build, one that does not build, step 12 breaks KUnit's list suite):
# `kforge bisect --check kunit:list*` against `git bisect run` with the script a developer
# writes (make, the modules in a busybox initramfs, boot, load the list suite, look for
# "not ok"), each from a cold start (kforge: an empty home and compiler cache; the plain
# script: a fresh clone, no ccache), the same .config, alternating, N rounds; then kforge's
# same bisect again, answered from its store and results database.
# Writes the section "Bisect" of docs/benchmarks.md.
#
#   scripts/bench-bisect.sh            BENCH_ROUNDS=3 scripts/bench-bisect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${BENCH_ROUNDS:-2}
accel=${BENCH_ACCEL:-tcg}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/kforge-bisect.XXXXXX")
trap 'if [[ $? == 0 ]]; then rm -rf "$work"; else echo "bench-bisect: failed; logs in $work" >&2; fi' EXIT
jobs=$(nproc)

cargo build --locked --release
kforge=$root/target/release/kforge
mirror=$(bash scripts/fixture-mirror.sh "$kforge")
tag=$(git --git-dir="$mirror" describe --tags --abbrev=0 master)
good=$(git --git-dir="$mirror" rev-parse "$tag^{commit}")
bad=$(git --git-dir="$mirror" rev-parse "test/bisect^{commit}")
culprit=$(git --git-dir="$mirror" rev-parse "test/bisect~4")
export KFORGE_MIRROR=$mirror KFORGE_CONFIG=/nonexistent
unset KFORGE_WORKERS_DIR KFORGE_WORKER_INDEX KFORGE_STORE KFORGE_LIBRARY KFORGE_SYSTEM_DIR KFORGE_CCACHE_DIR
. scripts/bench-lib.sh
say() { echo "bench-bisect: $*" >&2; }

# The .config both use: kforge's tiny preset at the base (Kconfig only).
config=$(KFORGE_SYSTEM_DIR=$work/config-home KFORGE_CCACHE_DIR=$work/config-ccache \
  "$kforge" -q identity "$tag" --preset tiny_guest_defconfig | jq -r .config)
grep -v '^CONFIG_LOCALVERSION=' "$config" >"$work/config"
echo 'CONFIG_LOCALVERSION=""' >>"$work/config"

# The plain script's initramfs: busybox; /init loads KUnit's list suite from the modules
# the script installs into it, and prints whether a case failed.
busybox=$(command -v busybox)
mkdir -p "$work/initramfs/bin" "$work/initramfs/proc" "$work/initramfs/sys"
cp "$busybox" "$work/initramfs/bin/busybox"
cat >"$work/initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox modprobe kunit
/bin/busybox modprobe list-test
if /bin/busybox dmesg | /bin/busybox grep -q 'not ok'; then echo "PLAIN-VERDICT bad"; else echo "PLAIN-VERDICT good"; fi
/bin/busybox reboot -f
EOF
chmod +x "$work/initramfs/init"
cat >"$work/check.sh" <<EOF
#!/usr/bin/env bash
# git bisect run's check: 0 good, 1 bad, 125 skip (does not build).
set -u
echo build >>"$work/plain-compiles"
make -j$jobs olddefconfig >>"$work/plain.log" 2>&1 && make -j$jobs >>"$work/plain.log" 2>&1 || exit 125
rm -rf "$work/ramfs" && cp -a "$work/initramfs" "$work/ramfs"
make INSTALL_MOD_PATH="$work/ramfs" modules_install >>"$work/plain.log" 2>&1 || exit 125
(cd "$work/ramfs" && find . | cpio -o -H newc --quiet) >"$work/ramfs.cpio"
out=\$(timeout 300 qemu-system-x86_64 -accel $accel -m 512 -nographic -no-reboot \\
  -kernel arch/x86/boot/bzImage -initrd "$work/ramfs.cpio" \\
  -append "console=ttyS0 quiet panic=-1" </dev/null | tr -d '\r')
grep -q 'PLAIN-VERDICT good' <<<"\$out" && exit 0
exit 1
EOF
chmod +x "$work/check.sh"

plain_round() {
  rm -rf "$work/plain" "$work/plain-compiles"
  git clone --quiet --shared "$mirror" "$work/plain"
  (cd "$work/plain" && git checkout --quiet --detach "$bad" && cp "$work/config" .config &&
    git bisect start "$bad" "$good" >/dev/null &&
    git bisect run "$work/check.sh" >"$work/plain-bisect.log" 2>&1 &&
    git bisect log | grep -q "first bad commit: \[$culprit\]")
}
kforge_round() {
  rm -rf "$work/home" "$work/ccache"
  KFORGE_SYSTEM_DIR=$work/home KFORGE_CCACHE_DIR=$work/ccache "$kforge" -q bisect \
    --good "$tag" --bad test/bisect --check 'kunit:list*' --preset tiny_guest_defconfig \
    --accel "$accel" >"$work/report.json" 2>"$work/kforge.log"
  [[ $(jq -r .first_bad.commit "$work/report.json") == "$culprit" ]]
}

declare -A secs compiles
for i in $(seq "$rounds"); do
  order=(kforge plain)
  ((i % 2 == 0)) && order=(plain kforge)
  for tool in "${order[@]}"; do
    t=$(now)
    "${tool}_round" || { say "$tool round $i did not find $culprit"; exit 1; }
    s=$(elapsed "$t")
    secs[$tool]+="$s "
    case $tool in
      kforge) c=$(jq -r .compiles "$work/report.json") ;;
      plain) c=$(wc -l <"$work/plain-compiles") ;;
    esac
    compiles[$tool]+="$c "
    say "round $i: $tool $s s, $c compiles"
  done
done

# kforge's same bisect again, on the last round's home.
again=()
for i in 1 2 3; do
  t=$(now)
  KFORGE_SYSTEM_DIR=$work/home KFORGE_CCACHE_DIR=$work/ccache "$kforge" -q bisect \
    --good "$tag" --bad test/bisect --check 'kunit:list*' --preset tiny_guest_defconfig \
    --accel "$accel" >"$work/again.json" 2>>"$work/kforge.log"
  again+=("$(BENCH_DIGITS=2 elapsed "$t")")
  [[ $(jq -r '.compiles' "$work/again.json") == 0 ]] || { say "the second bisect compiled"; exit 1; }
done
log=$(jq -r '.steps[] | "| \(.subject) | \(.how) | \(.verdict) | \(.seconds) |"' "$work/report.json")

# shellcheck disable=SC2086
section=$(
  echo "## Bisect"
  echo
  echo "Written by \`scripts/bench-bisect.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores): the fixture's"
  echo "\`test/bisect\` history (16 commits on $tag; step 12 breaks KUnit's list_test_list_init,"
  echo "step 10 does not build, step 9 touches only Documentation/), \`tiny_guest_defconfig\`, gcc,"
  echo "accel $accel, $rounds rounds alternating, each from a cold start. kforge: \`kforge bisect"
  echo "--check 'kunit:list*'\` with an empty home and compiler cache. Plain: \`git bisect run\` in a"
  echo "fresh clone with a script that runs make (no ccache), installs the modules into a busybox"
  echo "initramfs, boots it and loads the list suite (exit 125 when the build fails)."
  echo
  echo "| round | kforge bisect | compiles | git bisect run + make + QEMU | compiles |"
  echo "|---:|---:|---:|---:|---:|"
  read -ra k <<<"${secs[kforge]}"; read -ra p <<<"${secs[plain]}"
  read -ra kc <<<"${compiles[kforge]}"; read -ra pc <<<"${compiles[plain]}"
  for i in $(seq 0 $((rounds - 1))); do
    echo "| $((i + 1)) | ${k[$i]} s | ${kc[$i]} | ${p[$i]} s | ${pc[$i]} |"
  done
  echo "| median | **$(median "${k[@]}") s** | | **$(median "${p[@]}") s** | |"
  echo
  echo "Both find step 12. The same \`kforge bisect\` again (its builds in the store, its verdicts in"
  echo "the results database), 3 runs: $(printf '%s ' "${again[@]}")s, median"
  echo "**$(BENCH_DIGITS=2 median "${again[@]}") s** (target: under 10 s), 0 compiles."
  echo
  echo "kforge's log of the last cold round:"
  echo
  echo "| candidate | how | verdict | seconds |"
  echo "|---|---|---|---:|"
  echo "$log"
)
write_section "$root/docs/benchmarks.md" "$section"
echo "$section"
