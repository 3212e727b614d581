#!/usr/bin/env bash
# Checks that every way into the workspace compiles its shared crates with one feature set
# (so `cargo test`, `cargo run`, the examples, the Python build and datafusion-cli share one
# build of the DataFusion stack): for each package that two entry points share, the enabled
# features must be the same. Prints the packages that differ and fails if any do.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
tree() {
  cargo tree "$@" -e features,normal,build --prefix none --format '{p} {f}' 2>/dev/null |
    sed 's/ (\*)//' | grep -v '^[^ ]* feature ' | sort -u
}
tree -p jammi-db -p jammi-cli -e dev > "$out/test"
tree -p jammi-cli > "$out/run"
tree -p jammi-python > "$out/python"
tree -p jammi-datafusion-cli > "$out/datafusion-cli"
# The cluster (cargo feature `ballista`) is opt-in: no default build compiles Ballista.
if grep -l '^ballista' "$out"/*; then
  echo "the default build compiles Ballista (above: the builds that do)"; exit 1
fi
python3 - "$out" <<'PY'
import sys, pathlib, collections
out = pathlib.Path(sys.argv[1])
feats = collections.defaultdict(dict)  # "name version" -> build -> {features}
for f in out.iterdir():
    for line in f.read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 2:
            continue
        pkg = " ".join(parts[:2])
        fs = set(parts[3].split(",")) if len(parts) > 3 and parts[3] else set()
        feats[pkg].setdefault(f.name, set()).update(fs)
bad = 0
for pkg, by in sorted(feats.items()):
    sets = {frozenset(v) for v in by.values()}
    if len(sets) > 1:
        bad += 1
        print(f"{pkg}:")
        for build, fs in sorted(by.items()):
            print(f"  {build:15} {','.join(sorted(fs))}")
if bad:
    sys.exit(f"{bad} packages are built with different features")
print(f"one feature set: {len(feats)} packages")
PY
