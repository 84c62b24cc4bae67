#!/usr/bin/env bash
# The QEMU build, side by side in one run on the same tree (Debian's QEMU from the fixture
# mirror, branch debian/latest) and the same configure options:
#   - plain: the shell script a developer writes (a checkout, configure, `ninja`, `ninja
#     install` into a destdir), no ccache
#   - kforge qemu build in a fresh home, without ccache, twice, alternating with plain
#     (kforge, plain, plain, kforge)
#   - the same request again (answered from the store)
# and writes the figures into docs/benchmarks.md (the "QEMU" section; the rest of the file
# is scripts/bench.sh's). Takes about 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/install-deps.sh
cargo build --locked --release
kforge=$root/target/release/kforge
mirror=$(bash scripts/fixture-qemu.sh "$kforge")
work=${BENCH_DIR:-/var/tmp/kforge-bench-qemu}
rm -rf "$work"
mkdir -p "$work"
ref=debian/latest
commit=$(git --git-dir "$mirror" rev-parse "$ref^{commit}")
version=$(git --git-dir "$mirror" cat-file blob "$commit:VERSION")

declare -A secs notes
. scripts/bench-lib.sh

kf() { # kf NAME ARGS...: a kforge run with its own home
  local name=$1; shift
  KFORGE_CONFIG=/nonexistent KFORGE_QEMU_MIRROR=$mirror KFORGE_SYSTEM_DIR=$work/$name/system \
    KFORGE_WORKERS_DIR=$work/$name/workers KFORGE_CCACHE_DIR=$work/$name/ccache \
    "$kforge" "$@"
}

# Warm-up, untimed: read the mirror's objects once.
git clone --quiet --shared --no-checkout "$mirror" "$work/warmup"
git -C "$work/warmup" checkout --quiet --detach "$commit"
sync

run_kforge() { # run_kforge NAME
  local name=$1 t
  t=$(now)
  kf "$name" -q qemu build "$ref" --ccache=false >"$work/$name.json" 2>"$work/$name.log"
  secs[$name]=$(elapsed "$t")
  notes[$name]="$(jq -r .identity "$work/$name.json")"
}

run_plain() { # run_plain NAME: the same configure options as kforge's, without ccache
  local name=$1 t dir
  dir=$work/$name
  t=$(now)
  git clone --quiet --shared --no-checkout "$mirror" "$dir"
  git -C "$dir" checkout --quiet --detach "$commit"
  mkdir "$dir/build"
  mapfile -t args < <(jq -r '.configure_args[] | select(startswith("--with-pkgversion") | not)' \
    "$work/kforge_1.json" | sed 's/^--cc=ccache /--cc=/; s/^--cxx=ccache /--cxx=/' |
    sed "s|-ffile-prefix-map=[^=]*=|-ffile-prefix-map=$dir=|")
  (cd "$dir/build" && ../configure "${args[@]}" >"$work/$name.log" 2>&1 &&
    ninja -j"$(nproc)" >>"$work/$name.log" 2>&1 &&
    DESTDIR=$dir/destdir ninja install >>"$work/$name.log" 2>&1)
  secs[$name]=$(elapsed "$t")
  notes[$name]="$(grep -c '^\[' "$work/$name.log") ninja steps"
}

echo "bench-qemu: $ref ($commit, QEMU $version)" >&2
run_kforge kforge_1
run_plain plain_1
run_plain plain_2
run_kforge kforge_2
t=$(now)
kf kforge_2 -q qemu build "$ref" --ccache=false >"$work/again.json" 2>/dev/null
secs[kforge_again]=$(elapsed "$t")
notes[kforge_again]="reused: $(jq -r .reused "$work/again.json")"

plain=$(awk -v a="${secs[plain_1]}" -v b="${secs[plain_2]}" 'BEGIN{printf "%.1f", (a+b)/2}')
kmean=$(awk -v a="${secs[kforge_1]}" -v b="${secs[kforge_2]}" 'BEGIN{printf "%.1f", (a+b)/2}')
ratio() { awk -v a="$1" -v b="$plain" 'BEGIN{printf "%.3f", a/b}'; }

section=$(mktemp)
{
  echo "## QEMU"
  echo
  echo "Written by \`scripts/bench-qemu.sh\` on $(date -u +%F) ($(nproc) cores)."
  echo "QEMU $version, Debian's source (\`$ref\` of the fixture QEMU mirror), x86_64-softmmu,"
  echo "kforge's minimal feature set on both sides, gcc, no ccache. In this order, in one invocation."
  echo
  echo "| what | seconds | vs plain | notes |"
  echo "|---|---:|---:|---|"
  for n in kforge_1 plain_1 plain_2 kforge_2; do
    echo "| $n | ${secs[$n]} | $(ratio "${secs[$n]}") | ${notes[$n]} |"
  done
  echo "| plain | $plain | 1.000 | mean: checkout, configure, \`ninja\`, \`ninja install\` |"
  echo "| kforge | $kmean | $(ratio "$kmean") | mean: every step, publish to the store included |"
  echo "| kforge, same request again | ${secs[kforge_again]} | $(ratio "${secs[kforge_again]}") | ${notes[kforge_again]} |"
  echo
  echo "A plain \`ninja\` builds every default target, the unit tests and benchmarks among them;"
  echo "kforge builds only what \`meson install\` takes."
} >"$section"

out=docs/benchmarks.md
write_section "$out" "$(cat "$section")"
rm -f "$section"
cat "$out" | sed -n '/^## QEMU$/,/^## [^Q]/p' >&2
