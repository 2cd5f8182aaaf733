#!/usr/bin/env bash
# Set up napari-deep-prl on a fresh Debian/Ubuntu machine: system libraries for headless Qt/OpenGL
# (Xvfb, Mesa, xcb), PostgreSQL's server (the rating store tests start one on loopback and stop
# it), a virtual environment in .venv with PyTorch (see TORCH_INDEX_URL below), and
# the package with its test, Qt and ONNX extras. Idempotent: re-running only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
  libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 libxcb-cursor0
  libxcb-randr0 libxcb-shape0 libxcb-xkb1 postgresql)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "Installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch before the package, so that the package's torch requirement is already met. Which build
# pip picks depends on the machine: on Linux, PyPI serves the CUDA build (several GB); the
# project's own machines have the CPU wheel in pip's configured wheel folder. TORCH_INDEX_URL
# chooses the index, e.g. https://download.pytorch.org/whl/cpu for the CPU build.
.venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -e ".[testing,pyqt,onnx]"
echo "napari-deep-prl is installed in .venv ($(.venv/bin/deep-prl --version))"
