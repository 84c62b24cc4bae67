#!/usr/bin/env bash
# Prepares the kernel mirror the tests (and the quickstart) build from, offline:
# Debian's linux-source-6.12 tarball imported by `kforge mirror import-tarball`, plus a few
# test branches made with git plumbing. Cached: a second run with the same tarball reuses it.
#
#   scripts/fixture-mirror.sh [KFORGE_BINARY]    prints the mirror's path on stdout
#
# Layout of the mirror:
#   tag    v<version>        the tarball as imported (annotated)
#   branch master            the same commit
#   branch test/comment      + a comment in init/version.c (a different tree that builds)
#   branch test/broken       + a syntax error in init/version.c (a build that fails)
#   branch test/warning      + an unused variable in init/version.c (one compiler warning)
#   tag    kf-test-1         annotated, on test/comment
#   branch test/kunit-broken + one KUnit case of lib/list-test.c made to fail
#   branch test/bisect       16 commits: one outside the build, one that does not build (and
#                            its fix), one that breaks the KUnit case above (step 12)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
kforge=${1:-"$here/target/debug/kforge"}
tarball=${KFORGE_KERNEL_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
cache=${KFORGE_FIXTURE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kforge/fixture}

if [[ ! -f $tarball ]]; then
  echo "fixture: $tarball is missing: run scripts/install-deps.sh (package linux-source-6.12)" >&2
  exit 1
fi
[[ -x $kforge ]] || { echo "fixture: no kforge binary at $kforge (cargo build)" >&2; exit 1; }

# The version is in the tarball's top Makefile; reading it means decompressing the
# tarball, so it is remembered per tarball (size and mtime).
mkdir -p "$cache"
key="$cache/version-$(stat -c '%s-%Y' "$tarball")"
if [[ ! -s $key ]]; then
  makefile=$( (tar -xOf "$tarball" --wildcards '*/Makefile' --exclude='*/*/*' 2>/dev/null || true) | head -6)
  awk '/^VERSION =/{a=$3} /^PATCHLEVEL =/{b=$3} /^SUBLEVEL =/{c=$3} END{print a"."b"."c}' <<<"$makefile" >"$key"
fi
v=$(cat "$key")
[[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { rm -f "$key"; echo "fixture: cannot read the version of $tarball" >&2; exit 1; }
mirror="$cache/linux-$v.git"
stamp="$mirror/kforge-fixture-complete"

if [[ ! -f $stamp ]]; then
  rm -rf "$mirror"
  mkdir -p "$cache"
  echo "fixture: importing $tarball as v$v into $mirror (about 2 minutes)" >&2
  "$kforge" --mirror "$mirror" mirror import-tarball "$tarball" --tag "v$v" --branch master >&2
  touch "$stamp"
else
  echo "fixture: reusing $mirror" >&2
fi

# The test branches, made with git plumbing (seconds); a cached mirror gains the ones a
# newer version of this script adds.
export GIT_DIR=$mirror
export GIT_AUTHOR_NAME="kforge fixture" GIT_AUTHOR_EMAIL=fixture@kforge.invalid
export GIT_COMMITTER_NAME="kforge fixture" GIT_COMMITTER_EMAIL=fixture@kforge.invalid
export GIT_AUTHOR_DATE="@1700000000 +0000" GIT_COMMITTER_DATE="@1700000000 +0000"
base=$(git rev-parse "refs/tags/v$v^{commit}")
idx=$(mktemp)
trap 'rm -f "$idx"' EXIT

# commit_with FILE CONTENT_CMD MESSAGE -> prints the new commit on top of $base
commit_with() {
  local file=$1 message=$3 blob tree
  blob=$(git cat-file blob "$base:$file" | eval "$2" | git hash-object -w --stdin)
  GIT_INDEX_FILE=$idx git read-tree "$base"
  GIT_INDEX_FILE=$idx git update-index --cacheinfo "100644,$blob,$file"
  tree=$(GIT_INDEX_FILE=$idx git write-tree)
  git commit-tree "$tree" -p "$base" -m "$message"
}
# branch NAME FILE CONTENT_CMD MESSAGE: the branch, unless it is there
branch() {
  git rev-parse --verify --quiet "refs/heads/$1" >/dev/null && return 0
  git update-ref "refs/heads/$1" "$(commit_with "$2" "$3" "$4")"
}

branch test/comment init/version.c "cat; echo '/* kforge test branch: a comment only */'" "test: add a comment"
git rev-parse --verify --quiet refs/tags/kf-test-1 >/dev/null ||
  git tag -a -m "kforge test tag" kf-test-1 refs/heads/test/comment
branch test/broken init/version.c "cat; echo 'this is not C;'" "test: break the build"
branch test/warning init/version.c "cat; echo 'static int kforge_fixture_unused;'" "test: add a compiler warning"
# One KUnit case made to fail: list_test_list_init expects list3 not to be empty.
branch test/kunit-broken lib/list-test.c \
  "sed 's/KUNIT_EXPECT_TRUE(test, list_empty_careful(&list3));/KUNIT_EXPECT_FALSE(test, list_empty_careful(\&list3));/'" \
  "test: break list_test_list_init"
[[ $(git rev-parse "test/kunit-broken:lib/list-test.c") != $(git rev-parse "$base:lib/list-test.c") ]] ||
  { echo "fixture: the KUnit case to break was not found in lib/list-test.c" >&2; exit 1; }

# A linear history of 16 commits for bisect (test/bisect, on the base): each step adds a
# comment to init/version.c, but
#   step 9  touches only Documentation/ (nothing a kernel config builds),
#   step 10 breaks the build (a line that is not C), step 11 mends it,
#   step 12 breaks list_test_list_init (the first bad commit for KUnit's list suite).
if ! git rev-parse --verify --quiet refs/heads/test/bisect >/dev/null; then
  tip=$base
  for step in $(seq 16); do
    file=init/version.c
    case $step in
      9) file=Documentation/process/changes.rst edit="cat; echo; echo '.. bisect fixture step 9'" ;;
      10) edit="cat; echo 'this is not C; /* bisect fixture step 10 */'" ;;
      11) edit="grep -v 'bisect fixture step 10'; echo '/* bisect fixture step 11 */'" ;;
      12) file=lib/list-test.c
        edit="sed 's/KUNIT_EXPECT_TRUE(test, list_empty_careful(&list3));/KUNIT_EXPECT_FALSE(test, list_empty_careful(\&list3));/'" ;;
      *) edit="cat; echo '/* bisect fixture step $step */'" ;;
    esac
    blob=$(git cat-file blob "$tip:$file" | eval "$edit" | git hash-object -w --stdin)
    GIT_INDEX_FILE=$idx git read-tree "$tip"
    GIT_INDEX_FILE=$idx git update-index --cacheinfo "100644,$blob,$file"
    tree=$(GIT_INDEX_FILE=$idx git write-tree)
    tip=$(git commit-tree "$tree" -p "$tip" -m "bisect fixture: step $step")
  done
  [[ $(git rev-parse "$tip:lib/list-test.c") == $(git rev-parse "test/kunit-broken:lib/list-test.c") ]] ||
    { echo "fixture: test/bisect's step 12 did not break list_test_list_init" >&2; exit 1; }
  git update-ref refs/heads/test/bisect "$tip"
fi

echo "fixture: ready: $(git tag | tr '\n' ' ')/ $(git for-each-ref --format='%(refname:short)' refs/heads | tr '\n' ' ')" >&2
echo "$mirror"
