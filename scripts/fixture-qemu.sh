#!/usr/bin/env bash
# Prepares the QEMU mirror the tests build from, from Debian's QEMU source package: fetched
# with a private apt configuration (deb-src for this release; the host's sources are not
# touched), its upstream tarball imported by `kforge mirror --project qemu import-tarball`,
# and Debian's patch series (the stable releases and the build fixes for the firmware-free
# tarball) committed on top, one commit per patch. Cached: a second run reuses it.
#
#   scripts/fixture-qemu.sh [KFORGE_BINARY]    prints the mirror's path on stdout
#
# Layout of the mirror:
#   tag    v<upstream>             the orig tarball as imported (annotated)
#   branch debian/<version>        + debian/patches/series (what Debian builds)
#   branch debian/latest           the same commit
#
# KFORGE_QEMU_SOURCE_DIR: a directory already holding the .dsc, orig and debian tarballs
# (an offline machine); otherwise they are downloaded into the cache.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
kforge=${1:-"$here/target/debug/kforge"}
cache=${KFORGE_FIXTURE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kforge/fixture}
[[ -x $kforge ]] || { echo "fixture: no kforge binary at $kforge (cargo build)" >&2; exit 1; }
mkdir -p "$cache"

src=${KFORGE_QEMU_SOURCE_DIR:-$cache/qemu-source}
if ! compgen -G "$src/qemu_*.dsc" >/dev/null; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  apt_dir=$cache/qemu-apt
  mkdir -p "$apt_dir/lists/partial" "$src"
  cat >"$apt_dir/deb-src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir"
            -o "Dir::State::Lists=$apt_dir/lists" -o "Debug::NoLocking=1"
            -o "APT::Sandbox::User=root")
  echo "fixture: fetching Debian's qemu source package ($codename)" >&2
  apt-get "${apt_opts[@]}" -qq update >&2
  (cd "$src" && apt-get "${apt_opts[@]}" -qq source --download-only qemu >&2)
  compgen -G "$src/qemu_*.dsc" >/dev/null || { echo "fixture: apt-get source qemu fetched nothing" >&2; exit 1; }
fi
dsc=$(ls "$src"/qemu_*.dsc | head -1)
orig=$(ls "$src"/qemu_*.orig.tar.* | head -1)
debian=$(ls "$src"/qemu_*.debian.tar.* | head -1)
# The Debian version without its epoch (a ref name cannot hold `:`).
dversion=$(awk '/^Version:/{print $2; exit}' "$dsc")
dversion=${dversion#*:}
upstream=$(tar -xOf "$orig" --wildcards '*/VERSION' --exclude='*/*/*' | head -1)
[[ $upstream =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "fixture: cannot read the version of $orig" >&2; exit 1; }

mirror="$cache/qemu-$dversion.git"
stamp="$mirror/kforge-fixture-complete"
if [[ -f $stamp ]]; then
  echo "fixture: reusing $mirror" >&2
  echo "$mirror"
  exit 0
fi
rm -rf "$mirror"
echo "fixture: importing $(basename "$orig") as v$upstream into $mirror" >&2
"$kforge" --qemu-mirror "$mirror" -q mirror --project qemu import-tarball "$orig" --tag "v$upstream" >&2

export GIT_DIR=$mirror
export GIT_AUTHOR_NAME="kforge fixture" GIT_AUTHOR_EMAIL=fixture@kforge.invalid
export GIT_COMMITTER_NAME="kforge fixture" GIT_COMMITTER_EMAIL=fixture@kforge.invalid
export GIT_AUTHOR_DATE="@1700000000 +0000" GIT_COMMITTER_DATE="@1700000000 +0000"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xf "$debian" -C "$work"
# Applied the way Debian's build applies them (quilt, that is GNU patch): git apply refuses
# two stable diffs (a mangled rename in a test submodule, binary ACPI test tables), which
# patch skips as Debian's build does.
tree=$work/tree
mkdir "$tree"
export GIT_INDEX_FILE=$work/index
head=$(git rev-parse "refs/tags/v$upstream^{commit}")
git archive "$head" | tar -x -C "$tree"
git --work-tree="$tree" read-tree "$head"
n=0
while read -r patch _; do
  [[ -z $patch || $patch == \#* ]] && continue
  patch -d "$tree" -p1 -s -f --no-backup-if-mismatch <"$work/debian/patches/$patch" >&2
  git --work-tree="$tree" add --all --force .
  head=$(git commit-tree "$(git write-tree)" -p "$head" -m "debian: $patch" \
    -m "From Debian's qemu $dversion, debian/patches/$patch.")
  n=$((n + 1))
done <"$work/debian/patches/series"
git update-ref "refs/heads/debian/$dversion" "$head"
git update-ref refs/heads/debian/latest "$head"
touch "$stamp"
echo "fixture: ready: v$upstream + $n Debian patches = debian/$dversion ($(git cat-file blob "$head:VERSION"))" >&2
echo "$mirror"
