#!/usr/bin/env bash
# A repeated request, side by side in one run: kforge as it is (the fast path answers from
# the configure memory and the store, without the slot) against kforge before the fast path
# (BENCH_BASELINE, a commit: it re-syncs the slot to learn what the store knows), alternating,
# N rounds, medians; then the same request while another build holds the slot; then
# tuxmake, which has no store, rebuilding the same kernel from the same .config.
# Writes the section "A known identity" of docs/benchmarks.md.
#
#   scripts/bench-known.sh                     # tiny_guest_defconfig, 5 rounds
#   BENCH_BASELINE=<commit> BENCH_ROUNDS=7 scripts/bench-known.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${BENCH_ROUNDS:-5}
preset=${BENCH_PRESET:-tiny_guest_defconfig}
baseline=${BENCH_BASELINE:-$(git log --format=%H -1 --grep='^A known identity is answered without a slot')~1}
venv=${BENCH_VENV:-/var/tmp/kforge-bench-venv}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/kforge-known.XXXXXX")
cleanup() {
  git worktree remove --force "$work/baseline-src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --locked --release
kforge=$root/target/release/kforge
git worktree add --quiet --detach "$work/baseline-src" "$baseline"
(cd "$work/baseline-src" && cargo build --locked --release --quiet)
old=$work/baseline-src/target/release/kforge
mirror=$(bash scripts/fixture-mirror.sh "$kforge")
tag=$(git --git-dir="$mirror" describe --tags --abbrev=0 master)
if [[ ! -x $venv/bin/tuxmake ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tuxmake
fi

# Both binaries read this checkout's kconfig library: the same request is the same identity.
export KFORGE_SYSTEM_DIR=$work/home KFORGE_MIRROR=$mirror KFORGE_CCACHE_DIR=$work/ccache \
  KFORGE_CONFIG=/nonexistent KFORGE_LIBRARY=$root/kconfig-library
unset KFORGE_WORKERS_DIR KFORGE_WORKER_INDEX KFORGE_STORE
BENCH_DIGITS=3
. scripts/bench-lib.sh
say() { echo "bench-known: $*" >&2; }

# A, built once (and once more by the baseline, which then knows it in its slot's memory).
say "building $tag with $preset"
"$kforge" -q build "$tag" --preset "$preset" >"$work/a.json"
release=$(jq -r .uts_release "$work/a.json")
"$old" -q build "$tag" --preset "$preset" >/dev/null

request() { # request BINARY: one repeated request; prints its seconds, checks its answer
  local t
  t=$(now)
  "$1" -q build "$tag" --preset "$preset" >"$work/r.json"
  local s
  s=$(elapsed "$t")
  [[ $(jq -r '.uts_release + " " + .reused' "$work/r.json") == "$release store" ]] ||
    { say "$1 did not answer $release from the store"; exit 1; }
  echo "$s"
}
new_s=() old_s=()
for i in $(seq "$rounds"); do
  if ((i % 2)); then
    new_s+=("$(request "$kforge")"); old_s+=("$(request "$old")")
  else
    old_s+=("$(request "$old")"); new_s+=("$(request "$kforge")")
  fi
  say "round $i: now ${new_s[-1]} s, before ${old_s[-1]} s"
done

# While another build holds slot 0 (a clean rebuild of B: the test branch, compiling), a
# request for A on slot 0.
"$kforge" build test/comment --preset "$preset" --reuse=false --wipe-build >/dev/null 2>"$work/b.log" &
b=$!
until grep -q '^==> compile' "$work/b.log"; do
  kill -0 "$b" 2>/dev/null || { say "B ended before compiling"; cat "$work/b.log" >&2; exit 1; }
  sleep 0.2
done
busy_s=$(request "$kforge")
kill -0 "$b" 2>/dev/null && held=yes || held=no
old_busy=$( { "$old" -q build "$tag" --preset "$preset" >/dev/null 2>"$work/old-busy.log" && echo answered; } ||
  echo "exit $?$(grep -q 'is busy' "$work/old-busy.log" && echo ', slot busy')")
wait "$b"
say "while B held the slot ($held): ${busy_s} s; the baseline: $old_busy"

# tuxmake has no store: the same kernel again is a build, from a clean tree with the same .config.
git clone --quiet --shared --no-checkout "$mirror" "$work/tux"
git -C "$work/tux" checkout --quiet --detach "$tag"
tux_s=()
for i in 1 2; do
  t=$(now)
  "$venv/bin/tuxmake" --runtime null --target-arch x86_64 --toolchain gcc --jobs "$(nproc)" \
    --directory "$work/tux" --output-dir "$work/tux-out-$i" --build-dir "$work/tux-build-$i" \
    --kconfig "$(jq -r .config "$work/a.json")" config kernel modules >"$work/tux-$i.log" 2>&1 ||
    { say "tuxmake failed"; tail -5 "$work/tux-$i.log" >&2; exit 1; }
  tux_s+=("$(elapsed "$t")")
  say "tuxmake $i: ${tux_s[-1]} s"
done
tux_version=$("$venv/bin/tuxmake" --version 2>&1 | head -n 1)

section=$(
  echo "## A known identity"
  echo
  echo "Written by \`scripts/bench-known.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores): the same request"
  echo "(\`kforge build $tag --preset $preset\`, identity $release) again, its answer checked"
  echo "(\`reused: store\`), $rounds rounds alternating; seconds of wall time."
  echo
  echo "| round | kforge now | kforge before the fast path ($(git rev-parse --short "$baseline")) |"
  echo "|---:|---:|---:|"
  for i in $(seq 0 $((rounds - 1))); do
    echo "| $((i + 1)) | ${new_s[$i]} | ${old_s[$i]} |"
  done
  echo "| median | **$(median "${new_s[@]}")** | $(median "${old_s[@]}") |"
  echo
  echo "While a clean rebuild of another identity held slot 0 (still running: $held), the same"
  echo "request on slot 0 took ${busy_s} s; kforge before the fast path: $old_busy."
  echo "tuxmake ($tux_version), which has no store, rebuilds the same kernel from the same"
  echo ".config: $(printf '%s s, ' "${tux_s[@]}" | sed 's/, $//') (target: the repeated request under 0.1 s)."
)
write_section "$root/docs/benchmarks.md" "$section"
echo "$section"
