#!/usr/bin/env bash
# What confining the guests costs: `kforge boot --check` and `kforge run -- true` on the same
# kernel with kforge as it is (QEMU unprivileged under seccomp, handed its files; virtiofsd in
# its namespace sandbox) and with kforge before (BENCH_BASELINE, a commit), alternating,
# N rounds, medians. Writes the section "Guest sandbox" of docs/benchmarks.md.
#
#   scripts/bench-sandbox.sh MANIFEST_OR_IDENTITY
#   BENCH_BASELINE=<commit> BENCH_ROUNDS=9 scripts/bench-sandbox.sh kernel-<release>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${1:?usage: scripts/bench-sandbox.sh MANIFEST_OR_IDENTITY}
rounds=${BENCH_ROUNDS:-7}
baseline=${BENCH_BASELINE:-$(git log --format=%H -1 --grep='^Guests stay inside')~1}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/kforge-sandbox.XXXXXX")
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
manifest=$work/manifest.json
if [[ -f $target ]]; then cp "$target" "$manifest"; else "$kforge" store show --manifest "$target" >"$manifest"; fi
release=$(jq -r .uts_release "$manifest")
mkdir -p "$work/cwd"

BENCH_DIGITS=2
. scripts/bench-lib.sh
boot() { # boot BINARY: seconds of a passing check
  local t
  t=$(now)
  "$1" -q boot --check "$manifest" --accel tcg >"$work/b.json"
  [[ $(jq -r .guest_release "$work/b.json") == "$release" ]] || { echo "no verified boot" >&2; exit 1; }
  elapsed "$t"
}
run_true() { # run_true BINARY
  local t
  t=$(now)
  (cd "$work/cwd" && "$1" -q run "$manifest" --accel tcg -- true)
  elapsed "$t"
}
nb=() ob=() nr=() or=()
for i in $(seq "$rounds"); do
  if ((i % 2)); then
    nb+=("$(boot "$kforge")"); ob+=("$(boot "$old")"); nr+=("$(run_true "$kforge")"); or+=("$(run_true "$old")")
  else
    ob+=("$(boot "$old")"); nb+=("$(boot "$kforge")"); or+=("$(run_true "$old")"); nr+=("$(run_true "$kforge")")
  fi
  echo "bench-sandbox: round $i: boot ${nb[-1]} / ${ob[-1]} s, run ${nr[-1]} / ${or[-1]} s" >&2
done
mb=$(median "${nb[@]}") mob=$(median "${ob[@]}") mr=$(median "${nr[@]}") mor=$(median "${or[@]}")
pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%+.1f%%", (a-b)/b*100}'; }

section=$(
  echo "## Guest sandbox"
  echo
  echo "Written by \`scripts/bench-sandbox.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, as $(id -un)): kernel"
  echo "$release under TCG, $rounds rounds alternating, medians in seconds. Confined: QEMU as"
  echo "\`kforge-guest\` under its seccomp sandbox, handed its files and sockets; virtiofsd in its"
  echo "namespace sandbox. Before: kforge at $(git rev-parse --short "$baseline"), all as root, no sandbox."
  echo
  echo "| | confined | before | change |"
  echo "|---|---:|---:|---:|"
  echo "| \`kforge boot --check\` | $mb | $mob | $(pct "$mb" "$mob") |"
  echo "| \`kforge run -- true\` | $mr | $mor | $(pct "$mr" "$mor") |"
  echo
  echo "Target: the check no more than 5% slower."
)
write_section "$root/docs/benchmarks.md" "$section"
echo "$section"
