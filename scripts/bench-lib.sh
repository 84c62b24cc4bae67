# Sourced by the benchmark scripts: a clock, medians, and writing one section of
# docs/benchmarks.md while keeping every other script's sections.
# BENCH_DIGITS: the decimals of `elapsed` and `median` (default 1).

now() { date +%s.%N; }

# elapsed START: seconds since START (a `now`).
elapsed() {
  awk -v a="$1" -v b="$(now)" -v d="${BENCH_DIGITS:-1}" 'BEGIN{printf "%." d "f", b-a}'
}

# median VALUES...
median() {
  printf '%s\n' "$@" | sort -g | awk -v d="${BENCH_DIGITS:-1}" \
    '{v[NR]=$1} END{printf "%." d "f", NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

# write_section DOC TEXT: TEXT's first line is its heading ("## Title"); the section under that
# heading in DOC (up to the next "## ") is replaced by TEXT, or TEXT is appended.
write_section() {
  local doc=$1 text=$2
  touch "$doc"
  BENCH_TEXT=$text awk '
    BEGIN { text = ENVIRON["BENCH_TEXT"]; split(text, l, "\n"); title = l[1] }
    $0 == title { skip = 1; print text; print ""; done = 1; next }
    skip && /^## / { skip = 0 }
    !skip { print }
    END { if (!done) { print ""; print text } }
  ' "$doc" | cat -s >"$doc.tmp"
  mv "$doc.tmp" "$doc"
}
