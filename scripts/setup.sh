#!/usr/bin/env bash
# Makes sure the system OpenBLAS (and pkg-config, which build.rs uses to find it) is installed,
# and on x86-64 libxsmm (the small-batch engine; optional: without it the crate builds and runs
# every product on OpenBLAS); with --mpi also OpenMPI and libclang (the `mpi` feature: rsmpi's
# build runs bindgen).
#
# Installs it when it is missing and installing is allowed: running as root (or with password-less
# sudo) on a Debian/Ubuntu machine, and AFFINE_BLAS_NO_INSTALL is not set. Otherwise prints the one
# command to run and exits non-zero. Idempotent and quiet when everything is present.
set -euo pipefail

have_openblas() {
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openblas 2>/dev/null; then
    return 0
  fi
  # Without pkg-config, look where distributions put the library; build.rs does the same.
  local d
  for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib \
           /opt/homebrew/opt/openblas/lib /usr/local/opt/openblas/lib; do
    if ls "$d"/libopenblas.so "$d"/libopenblas.dylib "$d"/libopenblas.a >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

have_mpi() {
  command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 &&
    ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

have_xsmm() {
  [ "$(uname -m)" != x86_64 ] && return 0
  local d
  for d in /usr/lib /usr/lib/x86_64-linux-gnu /usr/local/lib; do  # build.rs looks here too
    [ -e "$d/libxsmm.a" ] && return 0
  done
  return 1
}

want_mpi=
for arg in "$@"; do
  case "$arg" in
    --mpi) want_mpi=1 ;;
    *) echo "usage: $0 [--mpi]" >&2; exit 2 ;;
  esac
done

packages=()
if ! have_openblas || ! command -v pkg-config >/dev/null 2>&1; then
  packages+=(libopenblas-dev pkg-config)
fi
if [ -n "$want_mpi" ] && ! have_mpi; then
  packages+=(libopenmpi-dev openmpi-bin libclang-dev clang)
fi
if [ ${#packages[@]} -eq 0 ] && have_xsmm; then
  exit 0
fi
# libxsmm is optional: missing alone, it is installed where that is allowed and skipped otherwise
if [ ${#packages[@]} -eq 0 ] && { [ -n "${AFFINE_BLAS_NO_INSTALL:-}" ] ||
    ! command -v apt-get >/dev/null 2>&1 ||
    { [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }; }; then
  echo "setup: libxsmm not found (Debian: apt-get install libxsmm-dev); the small-batch engine stays off" >&2
  exit 0
fi
have_xsmm || packages+=(libxsmm-dev)

hint() {
  echo "affine-blas needs: ${packages[*]}. Install them with one of:" >&2
  echo "  Debian/Ubuntu: sudo apt-get install -y ${packages[*]}" >&2
  echo "  Fedora:        sudo dnf install -y openblas-devel pkgconf-pkg-config${want_mpi:+ openmpi-devel clang-devel}" >&2
  echo "  macOS:         brew install openblas pkg-config${want_mpi:+ open-mpi llvm}" >&2
}

if [ -n "${AFFINE_BLAS_NO_INSTALL:-}" ] || ! command -v apt-get >/dev/null 2>&1; then
  hint
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  hint
  exit 1
fi

echo "setup: installing ${packages[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
have_xsmm || echo "setup: libxsmm still not found; the small-batch engine stays off" >&2
have_openblas || { echo "setup: OpenBLAS still not found after installing it" >&2; exit 1; }
echo "setup: OpenBLAS $(pkg-config --modversion openblas 2>/dev/null || echo '(version unknown)') ready" >&2
if [ -n "$want_mpi" ]; then
  have_mpi || { echo "setup: OpenMPI or libclang still not found after installing them" >&2; exit 1; }
  echo "setup: $(mpirun --version 2>/dev/null | head -n 1) ready" >&2
fi
