#!/usr/bin/env bash
# Makes t/data/ledger-v1/: a ledger of version 1 (before accounts), the
# fixture the migration tests open.  Run it in a checkout of commit d53f134
# (the last one with ledger version 1) after "make module tools":
#   tools/gen-ledger-v1.sh OUT_DIR PORT
# It creates three keys with that commit's tools/aiserve-keys (key_1 with
# limits and a model list, key_2 admin, key_3 revoked), charges four
# requests through that commit's nginx module, and copies data.mdb and
# hmac.key to OUT_DIR; the secrets go to OUT_DIR/keys.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$1
PORT=$2
TMP=$(mktemp -d)
K="$ROOT/tools/aiserve-keys --db $TMP/db"
mkdir -p "$TMP/logs" "$OUT"

$K create --name acme --tpm 100000 --budget 5000000 --period month \
   --models tiny --type test | grep api_key > "$OUT/keys.txt"
$K create --name ops --admin --type test | grep api_key >> "$OUT/keys.txt"
$K create --name old --type test | grep api_key >> "$OUT/keys.txt"
$K revoke key_3

cat > "$TMP/nginx.conf" <<CONF
daemon on; worker_processes 1; pid $TMP/logs/nginx.pid;
error_log $TMP/logs/error.log info;
load_module $ROOT/build/ngx_http_aiserve_module.so;
events {}
http {
    access_log off;
    aiserve_model tiny $ROOT/models/tiny-st-cls;
    aiserve_meter_db $TMP/db flush=100ms;
    aiserve_meter_zone gen_ledger_v1 1m;
    aiserve_price tiny 20;
    server {
        listen 127.0.0.1:$PORT;
        location /v1/embeddings { aiserve_infer tiny api=openai; aiserve_meter on; }
    }
}
CONF

/usr/sbin/nginx -p "$TMP" -c "$TMP/nginx.conf"
sleep 1
S1=$(sed -n 1p "$OUT/keys.txt" | cut -d' ' -f2)
S2=$(sed -n 2p "$OUT/keys.txt" | cut -d' ' -f2)
for i in 1 2 3; do
    curl -sf "http://127.0.0.1:$PORT/v1/embeddings" -o /dev/null \
         -H "Authorization: Bearer $S1" -H 'Content-Type: application/json' \
         -d '{"model": "tiny", "input": "hello world"}'
done
curl -sf "http://127.0.0.1:$PORT/v1/embeddings" -o /dev/null \
     -H "Authorization: Bearer $S2" -H 'Content-Type: application/json' \
     -d '{"model": "tiny", "input": ["a b c", "d"]}'
kill -QUIT "$(cat "$TMP/logs/nginx.pid")"
sleep 1
cp "$TMP/db/data.mdb" "$TMP/db/hmac.key" "$OUT/"
rm -rf "$TMP"
