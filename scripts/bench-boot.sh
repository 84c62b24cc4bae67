#!/usr/bin/env bash
# Boot to a verified `uname -r`, kforge against virtme-ng, on one kernel both can boot
# (virtme-ng runs the host's userspace, which the tiny test preset cannot: no futex, no
# multi-user), alternating, N rounds. Writes the section "Boot on a full kernel" of
# docs/benchmarks.md (scripts/bench.sh writes the rest).
#
#   scripts/bench-boot.sh MANIFEST_OR_IDENTITY     # e.g. an imageless_defconfig build
#   BENCH_ROUNDS=3 BENCH_VENV=/path/to/venv scripts/bench-boot.sh kernel-<release>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${1:?usage: scripts/bench-boot.sh MANIFEST_OR_IDENTITY}
rounds=${BENCH_ROUNDS:-3}
venv=${BENCH_VENV:-/var/tmp/kforge-bench-venv}
cargo build --locked --release
kforge=$root/target/release/kforge
if [[ ! -x $venv/bin/vng ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet virtme-ng
fi
export PATH="$venv/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

manifest=$work/manifest.json
if [[ -f $target ]]; then
  cp "$target" "$manifest"
else
  "$kforge" store show --manifest "$target" >"$manifest"
fi
release=$(jq -r .uts_release "$manifest")
image=$(jq -r .bzImage "$manifest")
# The same acceleration for both: kforge's probe decides, virtme-ng is told.
accel=$("$kforge" boot --check "$manifest" 2>/dev/null | jq -r .accel)
vng_accel=()
[[ $accel == tcg ]] && vng_accel=(--disable-kvm)
vng_version=$(vng --version 2>&1 | head -n 1)

BENCH_DIGITS=2
. scripts/bench-lib.sh
k_times=() v_times=()
for i in $(seq "$rounds"); do
  t=$(now)
  "$kforge" boot --check "$manifest" --accel "$accel" >"$work/k.json" 2>/dev/null
  [[ $(jq -r .guest_release "$work/k.json") == "$release" ]] || { echo "kforge did not verify $release" >&2; exit 1; }
  k_times+=("$(elapsed "$t")")
  t=$(now)
  # (vng prints the command's output on the console only with --verbose when not on a tty)
  (cd "$work" && timeout 300 vng --run "$image" "${vng_accel[@]}" --verbose --exec 'uname -r') >"$work/v.log" 2>&1 || true
  if tr -d '\r' <"$work/v.log" | grep -qx "$release"; then
    v_times+=("$(elapsed "$t")")
  else
    v_times+=("failed")
  fi
  echo "round $i: kforge ${k_times[-1]} s, vng ${v_times[-1]} s" >&2
done

section=$(
  echo "## Boot on a full kernel"
  echo
  echo "Written by \`scripts/bench-boot.sh\` on $(date -u +%Y-%m-%d): kernel $release"
  echo "(${BENCH_KERNEL_NOTE:-config method $(jq -r .config_method "$manifest")}; accel $accel), $rounds rounds alternating,"
  echo "seconds from the command to \`uname -r\` printed by the guest."
  echo
  echo "| round | kforge boot --check | vng --run --exec 'uname -r' |"
  echo "|---:|---:|---:|"
  for i in $(seq 0 $((rounds - 1))); do
    echo "| $((i + 1)) | ${k_times[$i]} | ${v_times[$i]} |"
  done
  echo
  echo "kforge also checks that a module (nls_utf8) loads from the virtiofs modules share;"
  echo "virtme-ng ($vng_version, ${vng_accel[*]:-with KVM}) runs the host's root filesystem."
)
write_section "$root/docs/benchmarks.md" "$section"
echo "$section"
