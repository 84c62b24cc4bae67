#!/usr/bin/env bash
# KUnit, side by side in one run: `kforge test kunit` on a built identity (the tiny preset:
# KUnit's own tests, the example suite, list, bitfield, cmdline as modules) to a verdict
# stored in the results database, against the kernel's own
# `tools/testing/kunit/kunit.py run --arch=x86_64` on the same tree with the same suites
# (built in, from a kunitconfig), which builds its own kernel: once cold, then alternating
# with kforge, N rounds, medians. Both boot under QEMU with the same acceleration.
# Writes the section "KUnit: a stored verdict" of docs/benchmarks.md.
#
#   scripts/bench-kunit.sh            BENCH_ROUNDS=5 scripts/bench-kunit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${BENCH_ROUNDS:-3}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/kforge-kunit.XXXXXX")
trap 'if [[ $? == 0 ]]; then rm -rf "$work"; else echo "bench-kunit: failed; logs in $work" >&2; fi' EXIT

cargo build --locked --release
kforge=$root/target/release/kforge
mirror=$(bash scripts/fixture-mirror.sh "$kforge")
tag=$(git --git-dir="$mirror" describe --tags --abbrev=0 master)
export KFORGE_SYSTEM_DIR=$work/home KFORGE_MIRROR=$mirror KFORGE_CCACHE_DIR=$work/ccache KFORGE_CONFIG=/nonexistent
unset KFORGE_WORKERS_DIR KFORGE_WORKER_INDEX KFORGE_STORE KFORGE_LIBRARY
. scripts/bench-lib.sh
say() { echo "bench-kunit: $*" >&2; }

say "building $tag (tiny_guest_defconfig) with kforge, once"
t=$(now)
"$kforge" -q build "$tag" --preset tiny_guest_defconfig >"$work/m.json"
kforge_build=$(elapsed "$t")
release=$(jq -r .uts_release "$work/m.json")
accel=$("$kforge" boot --check "$work/m.json" 2>/dev/null | jq -r .accel)

# kunit.py on a clean tree of the same commit, with the same suites built in.
git clone --quiet --shared --no-checkout "$mirror" "$work/tree"
git -C "$work/tree" checkout --quiet --detach "$tag"
cat >"$work/kunitconfig" <<'EOF'
CONFIG_KUNIT=y
CONFIG_KUNIT_TEST=y
CONFIG_KUNIT_EXAMPLE_TEST=y
CONFIG_RUNTIME_TESTING_MENU=y
CONFIG_LIST_KUNIT_TEST=y
CONFIG_BITFIELD_KUNIT=y
CONFIG_CMDLINE_KUNIT_TEST=y
EOF
kunitpy() { # kunitpy LOG: one `kunit.py run`; prints its "Ran N tests" line
  (cd "$work/tree" && python3 tools/testing/kunit/kunit.py run --arch=x86_64 \
    --kunitconfig="$work/kunitconfig" --build_dir="$work/kunit-build" --jobs="$(nproc)" \
    ${accel:+--qemu_args="-accel $accel"}) >"$1" 2>&1 || true
  grep -o 'Ran [0-9]* tests:.*' "$1" | tail -n 1 | tr -d '\033' | sed 's/\[[0-9;]*m//g'
}
say "kunit.py, cold (it builds its own kernel)"
t=$(now)
kunit_cold_said=$(kunitpy "$work/kunit-cold.log")
kunit_cold=$(elapsed "$t")
[[ -n $kunit_cold_said ]] || { say "kunit.py did not run its tests:"; tail -n 20 "$work/kunit-cold.log" >&2; exit 1; }

k_s=() p_s=()
for i in $(seq "$rounds"); do
  t=$(now)
  "$kforge" -q test kunit "$work/m.json" --accel "$accel" --exit-zero >"$work/k.json"
  k_s+=("$(elapsed "$t")")
  t=$(now)
  said=$(kunitpy "$work/kunit-$i.log")
  p_s+=("$(elapsed "$t")")
  say "round $i: kforge ${k_s[-1]} s, kunit.py ${p_s[-1]} s ($said)"
done
counts=$(jq -r '.run.counts | "\(.pass) passed, \(.fail) failed, \(.skip) skipped"' "$work/k.json")
cases=$(jq '.results | length' "$work/k.json")
run_id=$(jq -r .run.id "$work/k.json")

section=$(
  echo "## KUnit: a stored verdict"
  echo
  echo "Written by \`scripts/bench-kunit.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores): $tag, the same"
  echo "suites (KUnit's own tests, the example suite, list, bitfield, cmdline), accel $accel."
  echo "kforge tests the identity it built once ($release, ${kforge_build} s with a cold"
  echo "ccache), loading the suites as modules; kunit.py builds its own kernel from a kunitconfig"
  echo "with the suites built in. Seconds from the command to its verdict ($rounds rounds alternating)."
  echo
  echo "| round | kforge test kunit (verdict in the results database) | kunit.py run (build dir warm) |"
  echo "|---:|---:|---:|"
  for i in $(seq 0 $((rounds - 1))); do
    echo "| $((i + 1)) | ${k_s[$i]} | ${p_s[$i]} |"
  done
  echo "| median | **$(median "${k_s[@]}")** | $(median "${p_s[@]}") |"
  echo
  echo "kunit.py cold (configure and build its kernel, then run): ${kunit_cold} s ($kunit_cold_said)."
  echo "kforge's last run: $cases results, $counts, recorded as run $run_id with its console log."
)
write_section "$root/docs/benchmarks.md" "$section"
echo "$section"
