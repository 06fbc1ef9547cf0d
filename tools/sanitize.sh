#!/usr/bin/env bash
# Build the extension with AddressSanitizer + UndefinedBehaviorSanitizer and run the test
# suite against it. The kernels run without bounds checks behind the Python boundary; this
# is what shows that the boundary holds (no out-of-bounds access, no undefined behaviour).
#
# Usage: tools/sanitize.sh [pytest args]   (needs gcc, and numpy, Cython, setuptools,
# pytest, hypothesis in the current Python environment)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# a copy of the tracked tree, so the sanitized build never mixes with a normal one
git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$work")
cd "$work"
FASTBP_SANITIZE=1 python setup.py -q build_ext --inplace > build.log 2>&1 || { cat build.log; exit 1; }
for so in fastbp/_*.so; do  # the instrumentation really is there
  # grep reads all of nm's output (grep -q would close the pipe early: SIGPIPE under pipefail)
  nm -D "$so" | grep __asan_report > /dev/null || { echo "$so is not instrumented" >&2; exit 1; }
done

# Python itself is not built with ASan: preload the runtimes; CPython's own allocations
# look like leaks to LeakSanitizer, so leak checking is off.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# allocator_may_return_null: an impossible allocation (test_memory asks for 364 TiB)
# returns NULL, as malloc does, so NumPy raises MemoryError instead of ASan aborting
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$work"
python -c "import fastbp, sys; assert fastbp.__file__.startswith('$work'), fastbp.__file__"
python -m pytest tests -q -p no:cacheprovider "$@"
echo "sanitizers: clean"
