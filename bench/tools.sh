# Tools of the comparison paths (sourced by bench/run.sh), installed when missing:
# boringtun-cli and onetun from crates.io into a cache outside the repository (they are not
# nexd dependencies), matplotlib from PyPI for the chart. Sets BORINGTUN and ONETUN.
TOOLS=${BENCH_TOOLS:-$HOME/.cache/nexd-bench}
BORINGTUN=$TOOLS/bin/boringtun-cli
ONETUN=$TOOLS/bin/onetun
tools_install() {
  local want=()
  [ -x "$BORINGTUN" ] || want+=(boringtun-cli)
  [ -x "$ONETUN" ] || want+=(onetun)
  if [ ${#want[@]} -gt 0 ]; then
    echo "bench: cargo install ${want[*]} into $TOOLS (a few minutes, once)" >&2
    cargo install --locked --quiet --root "$TOOLS" "${want[@]}" >&2
  fi
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "bench: pip install matplotlib (for the chart)" >&2
    python3 -m pip install --quiet matplotlib >&2
  fi
}
