#!/usr/bin/env bash
# Installs the Debian 12 packages aiserve needs to build, run and test.
# Run as root (or through sudo); prints what it would install otherwise.
set -euo pipefail

PKGS=(
  build-essential pkg-config dpkg-dev
  nginx nginx-dev                 # the packaged nginx and its configure tree
  libjansson-dev                  # JSON
  libutf8proc-dev                 # Unicode
  liblmdb-dev lmdb-utils          # usage ledger
  libssl-dev                      # HMAC-SHA-256 of API keys
  libdnnl-dev                     # oneDNN: the projections (packed weights)
  libopenblas-pthread-dev         # other matrix products (one thread per call)
  libtest-base-perl libwww-perl   # Test::Nginx-format runner
  prometheus                      # promtool: checks the /metrics exposition
  clang libclang-rt-14-dev        # libFuzzer targets
  llvm-14                         # llvm-symbolizer: the fuzzers' reports name functions and lines
  libomp-14-dev                   # omp.h for clang: fuzz-model and test-clang build the whole engine with clang
  python3 python3-pip python3-venv unzip curl wrk
  ca-certificates                 # HTTPS for tools/fetch-model.sh
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "aiserve: installing Debian packages: ${missing[*]}"
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "aiserve: run as root: apt-get install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
# no questions: set for apt-get itself (sudo does not pass the environment on)
APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get)
"${APT[@]}" update -qq
"${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged nginx may have been started by the package's scripts; aiserve
# runs its own instances on 127.0.0.1 only.
$SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
