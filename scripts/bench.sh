#!/usr/bin/env bash
# kforge's benchmark: side by side, in one run, on the same kernel tree and config:
#   - a plain shell script around make (clone, configure, make, install, modules_install)
#   - kforge build, cold slot, without ccache (the overhead target: <= 3% over plain make),
#     twice, alternating with plain make (kforge, make, make, kforge) so neither side gets
#     the warmer machine
#   - kforge build, cold slot, cold ccache; and a cold slot with a warm ccache
#   - the store: the same request again (answered from the store), and an A -> B -> A switch
#   - tuxmake and virtme-ng (from PyPI) building the same tree with the same .config
# and writes the figures to docs/benchmarks.md (keeping the sections scripts/bench-boot.sh and
# scripts/bench-qemu.sh write). Takes about 45 minutes on 2 cores.
#
#   scripts/bench.sh            BENCH_PRESET=imageless_defconfig scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/install-deps.sh
cargo build --locked --release
kforge=$root/target/release/kforge
mirror=$(bash scripts/fixture-mirror.sh "$kforge")
preset=${BENCH_PRESET:-tiny_guest_defconfig}
work=${BENCH_DIR:-/var/tmp/kforge-bench}
venv=${BENCH_VENV:-$work-venv}
rm -rf "$work"
mkdir -p "$work"
tag=$(git --git-dir "$mirror" tag --list --sort=-v:refname 'v*' | head -n 1)
commit=$(git --git-dir "$mirror" rev-parse "$tag^{commit}")
jobs=$(nproc)

declare -A secs notes
. scripts/bench-lib.sh

kf() { # kf NAME ARGS...: a kforge run with its own home
  local name=$1; shift
  KFORGE_CONFIG=/nonexistent KFORGE_MIRROR=$mirror KFORGE_SYSTEM_DIR=$work/$name/system \
    KFORGE_WORKERS_DIR=$work/$name/workers KFORGE_CCACHE_DIR=${CCACHE_FOR:-$work/$name/ccache} \
    "$kforge" "$@"
}

checkout() { # checkout DIR: a fresh tree at the benchmark commit
  git clone --quiet --shared --no-checkout "$mirror" "$1"
  git -C "$1" checkout --quiet --detach "$commit"
}

echo "bench: $tag ($commit), preset $preset, $jobs jobs" >&2

if [[ ! -x $venv/bin/tuxmake || ! -x $venv/bin/vng ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tuxmake virtme-ng
fi

# Warm-up, untimed: read the mirror's objects once so that the first measured run does not
# pay for a cold page cache that the later ones do not. Nothing is deleted between timed
# runs: on these disks a checkout right after removing a kernel tree took 44 s instead of
# 6 s (the freed blocks are discarded in the background), which would bias whichever run
# came next. Trees stay until the next bench run removes $work, before the warm-up.
checkout "$work/warmup"
sync
sleep 30

# virtme-ng runs its helpers (virtme-configkernel, virtme-run) from PATH.
export PATH="$venv/bin:$PATH"

kforge_nocache() { # kforge_nocache N: a cold slot in its own home, no ccache
  sync
  local t
  t=$(now)
  kf "nocache$1" build "$tag" --preset "$preset" --ccache=false >"$work/nocache$1.json" 2>"$work/nocache$1.log"
  secs[kforge_nocache_$1]=$(elapsed "$t")
  notes[kforge_nocache_$1]="compile step $(sed -n 's/^ok  compile (\(.*\))$/\1/p' "$work/nocache$1.log"), prepare_worktree $(sed -n 's/^ok  prepare_worktree (\(.*\))$/\1/p' "$work/nocache$1.log")"
}

plain_make() { # plain_make N: the shell script around make, same tree, same config inputs
  sync
  local t
  t=$(now)
  (
    set -e
    checkout "$work/plain$1/tree"
    cd "$work/plain$1/tree"
    mk=(make O=build ARCH=x86_64 "--jobs=$jobs")
    cp "$root/kconfig-library/defconfigs/$preset" "$work/plain$1/preset"
    "${mk[@]}" -s KCONFIG_ALLCONFIG="$work/plain$1/preset" alldefconfig
    scripts/config --file build/.config -d LOCALVERSION_AUTO --set-str LOCALVERSION "${release#"${tag#v}"}"
    "${mk[@]}" -s olddefconfig
    "${mk[@]}" LOCALVERSION= KBUILD_BUILD_TIMESTAMP='Thu Jan  1 00:00:00 UTC 1970' \
      KBUILD_BUILD_USER=kforge KBUILD_BUILD_HOST=kforge KBUILD_BUILD_VERSION=1
    "${mk[@]}" LOCALVERSION= INSTALL_PATH="$work/plain$1/dest/boot" install
    "${mk[@]}" LOCALVERSION= INSTALL_MOD_PATH="$work/plain$1/dest" modules_install
  ) >"$work/plain$1.log" 2>&1
  secs[plain_make_$1]=$(elapsed "$t")
  if diff <(grep -v '^#' "$config") <(grep -v '^#' "$work/plain$1/tree/build/.config") >/dev/null; then
    notes[plain_make_$1]="same .config as kforge"
  else
    notes[plain_make_$1]="WARNING: .config differs from kforge's"
  fi
  if cmp -s "$(jq -r .bzImage "$work/nocache1.json")" "$work/plain$1/tree/build/arch/x86/boot/bzImage"; then
    notes[plain_make_$1]+="; byte-identical bzImage"
  fi
}

# 1.-4. kforge and plain make, cold, no ccache, alternating.
kforge_nocache 1
config=$(jq -r .config "$work/nocache1.json")
release=$(jq -r .uts_release "$work/nocache1.json")
plain_make 1
plain_make 2
kforge_nocache 2
mean() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (a+b)/2}'; }
secs[plain_make]=$(mean "${secs[plain_make_1]}" "${secs[plain_make_2]}")
secs[kforge_nocache]=$(mean "${secs[kforge_nocache_1]}" "${secs[kforge_nocache_2]}")
notes[plain_make]="mean of the two runs above"
notes[kforge_nocache]="mean of the two runs above"

# 3. kforge, cold slot, cold ccache; 4. cold slot, warm ccache.
sync
t=$(now)
CCACHE_FOR=$work/shared-ccache kf ccache-cold build "$tag" --preset "$preset" >"$work/cold.json" 2>"$work/cold.log"
secs[kforge_ccache_cold]=$(elapsed "$t")
sync
t=$(now)
CCACHE_FOR=$work/shared-ccache kf ccache-warm build "$tag" --preset "$preset" >"$work/warm.json" 2>"$work/warm.log"
secs[kforge_ccache_warm]=$(elapsed "$t")
notes[kforge_ccache_warm]="another slot, same identity: $(jq -r .uts_release "$work/warm.json")"

# 5. The store. The same request again in that home: answered from the store.
t=$(now)
CCACHE_FOR=$work/shared-ccache kf ccache-warm build "$tag" --preset "$preset" >"$work/repeat.json" 2>"$work/repeat.log"
secs[store_repeat]=$(BENCH_DIGITS=3 elapsed "$t") # answered in tens of ms: 0.1 s would round it to 0
notes[store_repeat]="reused: $(jq -r .reused "$work/repeat.json"), no make run"
# A -> B -> A: B is another ref (one file differs), then A again.
t=$(now)
CCACHE_FOR=$work/shared-ccache kf ccache-warm build test/comment --preset "$preset" >"$work/switch-b.json" 2>"$work/switch-b.log"
secs[switch_to_b]=$(elapsed "$t")
notes[switch_to_b]="B = branch test/comment (one file differs): incremental compile, $(jq -r .uts_release "$work/switch-b.json")"
t=$(now)
CCACHE_FOR=$work/shared-ccache kf ccache-warm build "$tag" --preset "$preset" >"$work/switch-a.json" 2>"$work/switch-a.log"
secs[switch_back_to_a]=$(BENCH_DIGITS=3 elapsed "$t")
notes[switch_back_to_a]="reused: $(jq -r .reused "$work/switch-a.json")"

# 5./6. tuxmake and virtme-ng, from PyPI, on fresh trees with kforge's .config.
tux_version=$("$venv/bin/tuxmake" --version 2>&1 | head -n 1)
vng_version=$("$venv/bin/vng" --version 2>&1 | head -n 1)
checkout "$work/tux/tree"
sync
t=$(now)
if "$venv/bin/tuxmake" --runtime null --target-arch x86_64 --toolchain gcc --jobs "$jobs" \
  --directory "$work/tux/tree" --build-dir "$work/tux/build" --output-dir "$work/tux/out" \
  --kconfig "$config" config kernel modules >"$work/tux.log" 2>&1; then
  secs[tuxmake]=$(elapsed "$t")
  notes[tuxmake]="$tux_version, --kconfig kforge's .config, targets config kernel modules"
else
  secs[tuxmake]="failed"
  notes[tuxmake]="$tux_version: $(tail -n 1 "$work/tux.log")"
fi
checkout "$work/vng/tree"
sync
t=$(now)
if (cd "$work/vng/tree" && "$venv/bin/vng" --build --config "$config" --jobs "$jobs") >"$work/vng.log" 2>&1; then
  secs[virtme_ng]=$(elapsed "$t")
  notes[virtme_ng]="$vng_version, --build --config kforge's .config (vng adds its own options on top)"
else
  secs[virtme_ng]="failed"
  notes[virtme_ng]="$vng_version: $(tail -n 1 "$work/vng.log" | cut -c1-160)"
fi

# 7. Boot: kforge boot --check against virtme-ng running the same kernel, to a verified
#    `uname -r` (TCG here; both pick KVM when it works).
image=$(jq -r .bzImage "$work/nocache1.json")
sync
t=$(now)
if kf nocache1 boot --check "$work/nocache1/workers/0/main/linux.manifest.json" >"$work/boot.json" 2>"$work/boot.log" \
  && [[ $(jq -r .guest_release "$work/boot.json") == "$release" ]]; then
  secs[boot_kforge]=$(elapsed "$t")
  notes[boot_kforge]="guest uname -r = $release, nls_utf8 loaded from virtiofs, accel $(jq -r .accel "$work/boot.json")"
else
  secs[boot_kforge]="failed"
  notes[boot_kforge]="$(tail -n 1 "$work/boot.log" | cut -c1-160)"
fi
sync
t=$(now)
if (cd "$work/vng/tree" && timeout 300 "$venv/bin/vng" --run "$image" --exec 'uname -r') >"$work/vng-run.log" 2>&1 \
  && grep -qx "$release" "$work/vng-run.log"; then
  secs[boot_vng]=$(elapsed "$t")
  notes[boot_vng]="$vng_version, vng --run <same bzImage> --exec 'uname -r' printed $release"
else
  secs[boot_vng]="failed"
  notes[boot_vng]="$vng_version: $(grep -v '^$' "$work/vng-run.log" | tail -n 1 | cut -c1-160)"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 > 0 && a ~ /^[0-9.]+$/) printf "%.3f", a/b; else print "-" }'; }
base=${secs[plain_make]}
overhead=$(awk -v a="${secs[kforge_nocache]}" -v b="$base" 'BEGIN{printf "%+.1f%%", (a/b-1)*100}')
{
  echo "# Benchmarks"
  echo
  echo "Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB)."
  echo "Kernel $tag from the fixture mirror, preset \`$preset\`, gcc $(gcc -dumpversion), $jobs make jobs."
  echo "In this order, in one invocation; wall-clock seconds from an empty build dir unless said."
  echo
  echo "## Cold build: kforge against plain make and the other tools"
  echo
  echo "| what | seconds | vs plain make | notes |"
  echo "|---|---:|---:|---|"
  for k in kforge_nocache_1 plain_make_1 plain_make_2 kforge_nocache_2 plain_make kforge_nocache kforge_ccache_cold kforge_ccache_warm tuxmake virtme_ng; do
    echo "| $k | ${secs[$k]} | $(ratio "${secs[$k]}" "$base") | ${notes[$k]:-} |"
  done
  echo
  echo "kforge's overhead over plain make (cold, no ccache, checkout + configure + build +"
  echo "install + modules_install on both sides): **$overhead** (target: at most +3%)."
  echo
  echo "plain make is the shell script a kernel developer writes: clone the tree, \`make"
  echo "KCONFIG_ALLCONFIG=<preset> alldefconfig\`, set LOCALVERSION, \`make\`, \`make install\`,"
  echo "\`make modules_install\`. tuxmake and virtme-ng build a fresh checkout of the same commit"
  echo "with kforge's .config; virtme-ng adds the options its guests need, so its config is larger."
  echo
  echo "## The store: never the same identity twice"
  echo
  echo "| what | seconds | notes |"
  echo "|---|---:|---|"
  for k in store_repeat switch_to_b switch_back_to_a; do
    echo "| $k | ${secs[$k]} | ${notes[$k]:-} |"
  done
  echo
  echo "A request whose identity exists, against tuxmake rebuilding the same kernel:"
  echo "**$(awk -v a="${secs[tuxmake]}" -v b="${secs[store_repeat]}" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b > 0) printf "%.0fx", a/b; else print "-" }') faster**"
  echo "(targets: under 3 s, at least 50x). A cold slot with a warm ccache against a cold slot"
  echo "without: ${secs[kforge_ccache_warm]} s against ${secs[kforge_nocache]} s."
  echo
  echo "## Boot to a verified \`uname -r\`"
  echo
  echo "| what | seconds | notes |"
  echo "|---|---:|---|"
  for k in boot_kforge boot_vng; do
    echo "| $k | ${secs[$k]} | ${notes[$k]:-} |"
  done
  echo
  echo "From the command to a verified \`uname -r\`, on the kernel kforge built without ccache:"
  echo "kforge boots it with its own initramfs and the modules over virtiofs; virtme-ng runs the"
  echo "same bzImage with the host's root filesystem, which this small preset cannot run (no"
  echo "futex, no multi-user): \`scripts/bench-boot.sh\` compares the two on a full kernel, below."
} >"$root/docs/benchmarks.md.new"
# Keep the sections the other bench scripts write (every one but this script's three).
touch "$root/docs/benchmarks.md"
awk '/^## / { keep = ($0 !~ /^## (Cold build: |The store: |Boot to a verified )/); if (keep) print "" }
     keep' "$root/docs/benchmarks.md" >>"$root/docs/benchmarks.md.new"
cat -s "$root/docs/benchmarks.md.new" >"$root/docs/benchmarks.md"
rm "$root/docs/benchmarks.md.new"
cat "$root/docs/benchmarks.md"
