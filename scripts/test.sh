#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
#   1. installs the system packages that are missing (apt-get),
#   2. builds kforge and prepares the fixture kernel mirror (cached between runs),
#   3. checks formatting and lints (the project's gates),
#   4. runs every test: unit tests, then the integration tests, which drive real git,
#      make, gcc, clang/LLVM and ccache on a real kernel tree, one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --locked
KFORGE_TEST_MIRROR=$(bash scripts/fixture-mirror.sh "$PWD/target/debug/kforge")
export KFORGE_TEST_MIRROR

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

# Kernel builds use every core already (make --jobs=$(nproc)): run tests one at a time.
cargo test --locked -- --test-threads=1
