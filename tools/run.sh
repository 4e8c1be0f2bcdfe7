#!/usr/bin/env bash
# `make run`: serves conf/aiserve.conf on 127.0.0.1:8080 in the foreground
# with Debian's nginx and the module built in build/.  Does what set-up is
# missing first (Debian packages, the default model, the build), so it also
# works when called directly.  Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NGINX=${NGINX:-/usr/sbin/nginx}
CONF="$ROOT/conf/aiserve.conf"

if [ ! -x "$NGINX" ] || [ ! -f build/ngx_http_aiserve_module.so ] \
   || [ ! -f models/all-MiniLM-L6-v2/model.safetensors ]; then
    make --no-print-directory deps module
fi

mkdir -p build/run

if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    echo "aiserve: 127.0.0.1:8080 is already in use (a previous make run?)" >&2
    exit 1
fi

# As root, nginx would run its workers as "nobody", which may not read the
# model files of this checkout: keep the checkout's owner instead.
GLOBALS="daemon off;"
if [ "$(id -u)" -eq 0 ]; then
    GLOBALS="$GLOBALS user $(stat -c %U "$ROOT") $(stat -c %G "$ROOT");"
fi

"$NGINX" -t -q -p "$ROOT/" -c "$CONF" -g "$GLOBALS"

cat <<'MSG'
aiserve: serving conf/aiserve.conf on http://127.0.0.1:8080 (Ctrl-C stops)
aiserve: try
  curl -s http://127.0.0.1:8080/v1/embeddings -H 'Content-Type: application/json' -d '{"input": "Hello world!", "model": "minilm"}'
MSG

exec "$NGINX" -p "$ROOT/" -c "$CONF" -g "$GLOBALS"
