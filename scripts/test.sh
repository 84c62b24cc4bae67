#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
#   1. installs the system packages that are missing (apt-get), and cargo-nextest from
#      crates.io when it is not installed,
#   2. builds kforge and prepares the fixture mirrors (cached between runs): the kernel's
#      from linux-source-6.12, QEMU's from Debian's qemu source package,
#   3. installs the Windmill flow's validator (npm) and checks formatting and lints,
#   4. runs every test with cargo-nextest (.config/nextest.toml): the unit tests, the
#      command line and store tests, and the integration tests that drive real git, make,
#      gcc, clang/LLVM, ccache, b4, QEMU, virtiofsd, systemd and redis on a real kernel tree
#      (and build QEMU itself from Debian's source). JUnit XML: target/nextest/ci/junit.xml.
#
# Extra arguments go to `cargo nextest run` (e.g. a filter: scripts/test.sh -E 'test(/^guest::/)').
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: cargo install cargo-nextest (from crates.io)" >&2
  cargo install --locked cargo-nextest
fi
cargo build --locked
# The fixture mirrors (cached between runs; made anew, the kernel's import takes about 90 s
# and QEMU's about a minute) are made while the lints and the test build use the CPU.
kernel_fixture=$(mktemp) qemu_fixture=$(mktemp)
bash scripts/fixture-mirror.sh "$PWD/target/debug/kforge" >"$kernel_fixture" & kernel_pid=$!
bash scripts/fixture-qemu.sh "$PWD/target/debug/kforge" >"$qemu_fixture" & qemu_pid=$!

# The Windmill flow's offline checks: Windmill's schema validator, pinned by
# windmill/package-lock.json (from the npm registry once, then cached in node_modules).
if [[ ! -d windmill/node_modules/windmill-yaml-validator ]]; then
  npm ci --prefix windmill --no-audit --no-fund --loglevel=error
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo nextest run --locked --no-run

wait $kernel_pid || { echo "test.sh: scripts/fixture-mirror.sh failed" >&2; exit 1; }
wait $qemu_pid || { echo "test.sh: scripts/fixture-qemu.sh failed" >&2; exit 1; }
KFORGE_TEST_MIRROR=$(cat "$kernel_fixture") KFORGE_TEST_QEMU_MIRROR=$(cat "$qemu_fixture")
rm -f "$kernel_fixture" "$qemu_fixture"
export KFORGE_TEST_MIRROR KFORGE_TEST_QEMU_MIRROR

# Every suite starts without fixtures and test homes of an earlier run (the kernels it
# consumes are built again, once); the shared ccache stays, it is no build input.
mkdir -p target/kforge-test
find target/kforge-test -mindepth 1 -maxdepth 1 ! -name ccache -exec rm -rf {} +

# The suite's files (fixtures, test homes, the shared ccache) all go to target/kforge-test.
# Its peak is about 8 GB (README, The test suite); say what there is, and warn below 10 GB,
# so a run that fills the disk says so at its start.
free_gb=$(df --output=avail -BG target/kforge-test | tail -1 | tr -dc 0-9)
echo "test.sh: ${free_gb} GB free for target/kforge-test" >&2
if ((free_gb < 10)); then
  echo "test.sh: warning: the suite needs about 8 GB there at its peak; tests may fail with a full disk" >&2
fi

t0=$SECONDS
cargo nextest run --locked --profile ci --run-ignored all "$@"
echo "test.sh: all tests passed; the tests took $((SECONDS - t0)) s" >&2
