#!/usr/bin/env bash
# Fetch the pure-Python wheels that the offline GPU machine lacks (Python 3.12; it has torch,
# transformers, peft, accelerate, pandas, pyarrow, xxhash, fsspec, sympy, pytest), at the
# versions pinned in constraints.txt, for `scripts/gpu_check.py --wheels DIR`.
#
#   scripts/fetch_gpu_wheels.sh [DIR]            # default DIR: .gpu-wheels (git-ignored)
#   WITH_HF_PINS=1 scripts/fetch_gpu_wheels.sh   # also transformers and peft at our pins,
#                                                # instead of the machine's own versions
#
# Needs pip and access to PyPI (run it here, not on the GPU machine); checks that every
# wheel is pure Python and that the folder stays under 64 MiB (what a device run carries).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu-wheels}
PY=${PYTHON:-python3}
MAX_MIB=64

# What run.py needs and the GPU machine lacks: trl, datasets (+ dill, multiprocess), hydra-core
# (+ omegaconf, antlr4-python3-runtime), math-verify (+ latex2sympy2_extended).
PACKAGES=(trl datasets dill multiprocess hydra-core omegaconf math-verify latex2sympy2_extended)
if [[ "${WITH_HF_PINS:-0}" == 1 ]]; then PACKAGES+=(transformers peft); fi

pin() {   # NAME -> NAME==VERSION from constraints.txt (or stop: every wheel is pinned there)
  local line
  line=$(grep -iE "^$1==" constraints.txt | head -1 || true)
  [[ -n "$line" ]] || { echo "error: $1 is not pinned in constraints.txt" >&2; exit 2; }
  echo "$line"
}

mkdir -p "$DIR"
SPECS=()
for p in "${PACKAGES[@]}"; do SPECS+=("$(pin "$p")"); done
echo "fetching into $DIR: ${SPECS[*]} $(pin antlr4-python3-runtime)"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform any \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DIR" "${SPECS[@]}"
# antlr4-python3-runtime 4.9.3 (hydra-core/omegaconf need 4.9.*) is published as a source
# archive only: build its pure-Python wheel here (setuptools, no compiler).
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$DIR" \
  "$(pin antlr4-python3-runtime)"

# Every wheel pure Python (py3/py312-none-any), one version of each, all pins present.
bad=$(find "$DIR" -name '*.whl' ! -name '*-none-any.whl' -printf '%f\n')
[[ -z "$bad" ]] || { echo "error: not pure Python: $bad" >&2; exit 1; }
count=$(find "$DIR" -name '*.whl' | wc -l)
expected=$(( ${#PACKAGES[@]} + 1 ))
[[ "$count" -eq "$expected" ]] || {
  echo "error: $DIR holds $count wheels, expected $expected (a stale folder? empty it)" >&2; exit 1; }
bytes=$(find "$DIR" -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
(( bytes < MAX_MIB * 1048576 )) || { echo "error: $DIR is $mib MiB, over $MAX_MIB MiB" >&2; exit 1; }
echo "$count wheels, $mib MiB in $DIR:"
find "$DIR" -name '*.whl' -printf '  %f\n' | sort
