#!/usr/bin/env bash
# Installs Flextron's build and runtime dependencies from Debian's packages, only when missing.
# Idempotent and quiet when there is nothing to do. Needs root (or sudo) to install.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev              # LibTorch (PyTorch C++ API)
  libgloo-dev               # headers of c10d's gloo backend (data-parallel training)
  libsentencepiece-dev      # SentencePiece tokenizers
  nlohmann-json3-dev        # JSON
  libcli11-dev              # command line
  libcpp-httplib-dev        # HTTP server
  libpcre2-dev              # BPE pre-tokenization (Unicode regex)
  libicu-dev                # tokenizer.json NFC / NFKC / Lowercase normalizers
  libopenblas-dev           # BLAS
  libgtest-dev libgmock-dev # tests
  libbenchmark-dev          # benchmarks
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
