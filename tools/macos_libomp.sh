#!/usr/bin/env bash
# macOS wheels: put an OpenMP runtime built for the wheel's deployment target into
# /tmp/libomp (include/omp.h, lib/libomp.dylib). Like scikit-learn's wheel builds, it takes
# conda-forge's llvm-openmp rather than Homebrew's libomp, which is built for the runner's
# own macOS version and would make the wheel refuse to load on older systems.
# Run by cibuildwheel's before-all on a native runner (x86_64 or arm64).
set -euo pipefail
case "$(uname -m)" in
  arm64) platform=osx-arm64 ;;
  x86_64) platform=osx-64 ;;
  *) echo "unsupported macOS architecture $(uname -m)" >&2; exit 1 ;;
esac
prefix=/tmp/libomp
tools="$(mktemp -d)"
curl -fsSL "https://micro.mamba.pm/api/micromamba/${platform}/latest" | tar -xj -C "$tools" bin/micromamba
"$tools/bin/micromamba" create --yes --quiet --prefix "$prefix" --channel conda-forge \
  --override-channels "llvm-openmp>=17,<20"
test -f "$prefix/include/omp.h" && test -f "$prefix/lib/libomp.dylib"
otool -l "$prefix/lib/libomp.dylib" | grep -A4 -E "LC_BUILD_VERSION|LC_VERSION_MIN" | grep -E "minos|version" || true
echo "libomp for ${platform} in ${prefix}"
