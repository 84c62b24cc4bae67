#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
#   1. installs the system packages that are missing (apt-get),
#   2. builds kforge and prepares the fixture mirrors (cached between runs): the kernel's
#      from linux-source-6.12, QEMU's from Debian's qemu source package,
#   3. installs the Windmill flow's validator (npm) and checks formatting and lints,
#   4. runs every test: unit tests, then the integration tests, which drive real git,
#      make, gcc, clang/LLVM, ccache, b4, QEMU, virtiofsd, systemd and redis on a real
#      kernel tree (and build QEMU itself from Debian's source), in two lanes side by side.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --locked
KFORGE_TEST_MIRROR=$(bash scripts/fixture-mirror.sh "$PWD/target/debug/kforge")
export KFORGE_TEST_MIRROR
# The QEMU mirror (apt-get source, an import and 38 patches: about a minute, mostly I/O)
# is made while the lints below use the CPU.
qemu_fixture=$(mktemp)
bash scripts/fixture-qemu.sh "$PWD/target/debug/kforge" >"$qemu_fixture" & qemu_pid=$!

# The Windmill flow's offline checks: Windmill's schema validator, pinned by
# windmill/package-lock.json (from the npm registry once, then cached in node_modules).
if [[ ! -d windmill/node_modules/windmill-yaml-validator ]]; then
  npm ci --prefix windmill --no-audit --no-fund --loglevel=error
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

# Unit tests first (seconds).
cargo test --locked --lib --bins

wait $qemu_pid || { echo "test.sh: scripts/fixture-qemu.sh failed" >&2; exit 1; }
KFORGE_TEST_QEMU_MIRROR=$(cat "$qemu_fixture")
rm -f "$qemu_fixture"
export KFORGE_TEST_QEMU_MIRROR

# Warm the tests' shared ccache once with the config most tests build (tiny_guest_defconfig,
# gcc), so the two lanes below do not both pay a cold compile of the same objects at once
# (that alone doubled the first tests' time). A scratch kforge home, removed after.
mkdir -p target/kforge-test
warm=$(mktemp -d "$PWD/target/kforge-test/warmup-XXXXXX")
t0=$SECONDS
env -i PATH="$PATH" HOME="$warm" KFORGE_CONFIG="$warm/none.toml" \
  KFORGE_SYSTEM_DIR="$warm/system" KFORGE_WORKERS_DIR="$warm/workers" \
  KFORGE_MIRROR="$KFORGE_TEST_MIRROR" KFORGE_CCACHE_DIR="$PWD/target/kforge-test/ccache" \
  target/debug/kforge -q build v6.12.117 --preset tiny_guest_defconfig >/dev/null
rm -rf "$warm"
echo "test.sh: ccache warmed in $((SECONDS - t0)) s" >&2

# The integration tests, in two lanes side by side. Each test binary runs its tests one at
# a time (a kernel build uses every core: make --jobs=$(nproc)), but much of a test is
# single-threaded (git checkouts, Kconfig, depmod, guest boots under TCG), so two lanes
# finish in about two thirds of the time one takes. The lanes are balanced by the times
# measured on 2 cores; every test has its own kforge home, only ccache is shared.
LANE_A=(build series guest vm remote_cache windmill cli)
LANE_B=(store peers identity devel qemu)

declare -A exe
while IFS=$'\t' read -r name path; do
  exe[$name]=$path
done < <(cargo test --locked --no-run --tests --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .profile.test and .target.kind == ["test"]) | [.target.name, .executable] | @tsv')

known=" ${LANE_A[*]} ${LANE_B[*]} "
for name in "${!exe[@]}"; do
  [[ $known == *" $name "* ]] || { echo "test.sh: tests/$name.rs is in no lane" >&2; exit 1; }
done

logs=$(mktemp -d)
lane() {
  local log=$1; shift
  local status=0
  for name in "$@"; do
    echo "==> tests/$name.rs" >>"$log"
    local t0=$SECONDS
    "${exe[$name]}" --test-threads=1 >>"$log" 2>&1 || status=1
    echo "<== tests/$name.rs: $((SECONDS - t0)) s" >>"$log"
    ((status == 0)) || break
  done
  return $status
}
lane "$logs/a" "${LANE_A[@]}" & pid_a=$!
lane "$logs/b" "${LANE_B[@]}" & pid_b=$!
status=0
wait $pid_a || status=1
wait $pid_b || status=1
cat "$logs/a" "$logs/b"
grep -h '^<== ' "$logs/a" "$logs/b" >&2
rm -rf "$logs"
if ((status)); then
  echo "test.sh: integration tests failed (see above)" >&2
  exit 1
fi
echo "test.sh: all tests passed" >&2
