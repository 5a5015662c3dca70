#!/usr/bin/env bash
# Builds dqnfast._core with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option DQNFAST_SANITIZE=ON) into a scratch copy of the package and
# runs the replay tests against it. Usage: bash scripts/sanitize.sh [test files / pytest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${DQNFAST_SANITIZE_DIR:-$root/build/sanitize}
rm -rf "$work/pkg" && mkdir -p "$work/pkg"
cmake -S "$root" -B "$work/cmake" -DDQNFAST_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPython_EXECUTABLE="$(command -v python)" -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$work/pkg/dqnfast" ${CMAKE_GENERATOR:+-G "$CMAKE_GENERATOR"} >/dev/null
# -L: dqnfast/conf is a link to the repo's conf/; the copy needs the files, not a dangling link
cp -rL "$root/dqnfast" "$work/pkg/"
rm -f "$work/pkg/dqnfast"/_core*.so
cmake --build "$work/cmake" --parallel >/dev/null
asan=$(g++ -print-file-name=libasan.so)
ubsan=$(g++ -print-file-name=libubsan.so)
# Run from the scratch dir: the repo root on sys.path would shadow the copy.
cd "$work"
# Python itself is not instrumented: leaks at interpreter exit are not ours.
# torch's own libtorch_python trips alloc-dealloc-mismatch at import (not our code).
export ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
LD_PRELOAD="$asan:$ubsan" PYTHONPATH="$work/pkg" python - "$work/pkg" <<'PY'
import dqnfast._core as c, sys
assert c.__file__.startswith(sys.argv[1]), c.__file__
print("sanitized core:", c.__file__)
PY
if [ "$#" -eq 0 ]; then
  # the prioritized tests but the one that trains through the CLI (a subprocess with the repo's own core)
  set -- "$root"/tests/test_replay_property.py "$root"/tests/test_replay_api.py "$root"/tests/test_replay_envpool.py \
    "$root"/tests/test_prioritized.py -k "not through_the_cli"
fi
LD_PRELOAD="$asan:$ubsan" PYTHONPATH="$work/pkg" python -m pytest -c "$root/pyproject.toml" --rootdir "$root" -p no:cacheprovider -q "$@"
