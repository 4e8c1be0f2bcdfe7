#!/usr/bin/env bash
# `make run`: serves conf/aiserve.conf on 127.0.0.1:PORT (default 8080) in
# the foreground with Debian's nginx and the module built in build/.  Does
# what set-up is missing first (Debian packages, the default model, the
# build), so it also works when called directly.  Ctrl-C stops it.
#
#   PORT=8081 tools/run.sh      (make run PORT=8081)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NGINX=${NGINX:-/usr/sbin/nginx}
PORT=${PORT:-8080}
SRC_CONF="$ROOT/conf/aiserve.conf"
CONF="$ROOT/build/run/aiserve.conf"

case $PORT in
    ''|*[!0-9]*) PORT_OK=0 ;;
    *) PORT_OK=$(( 10#$PORT >= 1 && 10#$PORT <= 65535 )) ;;
esac
if [ "$PORT_OK" != 1 ]; then
    echo "aiserve: PORT=$PORT is not a port number (1-65535)" >&2
    exit 1
fi
PORT=$(( 10#$PORT ))

if [ ! -x "$NGINX" ] || [ ! -f build/ngx_http_aiserve_module.so ] \
   || [ ! -f models/all-MiniLM-L6-v2/model.safetensors ]; then
    make --no-print-directory deps module
fi

mkdir -p build/run

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "aiserve: 127.0.0.1:$PORT is already in use (a previous make run?)" >&2
    exit 1
fi

# nginx reads a copy of conf/aiserve.conf with its one listen line set to
# PORT.  The copy lives in build/run/, so the relative aiserve_model paths
# (relative to the configuration's directory) are made absolute, to the
# same directories conf/aiserve.conf names.
listens=$(grep -c '^[[:space:]]*listen[[:space:]]\+127\.0\.0\.1:8080;' "$SRC_CONF" || true)
if [ "$listens" != 1 ]; then
    echo "aiserve: $SRC_CONF must have exactly one 'listen 127.0.0.1:8080;' line for PORT to replace" >&2
    exit 1
fi
sed -e "s|^\([[:space:]]*listen[[:space:]]\+127\.0\.0\.1:\)8080;|\1$PORT;|" \
    -e "s|^\([[:space:]]*aiserve_model[[:space:]]\+[^[:space:]]\+[[:space:]]\+\)\([^/[:space:]]\)|\1$ROOT/conf/\2|" \
    "$SRC_CONF" >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"

# As root, nginx would run its workers as "nobody", which may not read the
# model files of this checkout: keep the checkout's owner instead.
GLOBALS="daemon off;"
if [ "$(id -u)" -eq 0 ]; then
    GLOBALS="$GLOBALS user $(stat -c %U "$ROOT") $(stat -c %G "$ROOT");"
fi

"$NGINX" -t -q -p "$ROOT/" -c "$CONF" -g "$GLOBALS"

cat <<MSG
aiserve: serving conf/aiserve.conf on http://127.0.0.1:$PORT (Ctrl-C stops)
aiserve: try
  curl -s http://127.0.0.1:$PORT/v1/embeddings -H 'Content-Type: application/json' -d '{"input": "Hello world!", "model": "minilm"}'
MSG

exec "$NGINX" -p "$ROOT/" -c "$CONF" -g "$GLOBALS"
