#!/usr/bin/env bash
# Makes t/data/ledger-v2/: a ledger of version 2 (accounts, usage rows keyed
# by key, day and model, without the route or the price), the fixture the
# migration tests open.  Run it in a checkout of commit 8a57ed5 (the last
# one with ledger version 2) after "make module tools":
#   tools/gen-ledger-v2.sh OUT_DIR PORT
# It creates acct_1 "acme" with a monthly budget and two keys (key_1,
# key_2), key_3 admin in its own acct_2, charges requests to two models at
# two prices through that commit's nginx module (key_1: 3 on tiny, key_2:
# 1 on max), has one request refused (401: key_2 after its revocation),
# and copies data.mdb and hmac.key to OUT_DIR; the secrets go to
# OUT_DIR/keys.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$1
PORT=$2
TMP=$(mktemp -d)
K="$ROOT/tools/aiserve-keys --db $TMP/db"
mkdir -p "$TMP/logs" "$OUT"

$K account create --name acme --budget 5000000 --period month
$K create --account 1 --name acme-prod --type test | grep api_key > "$OUT/keys.txt"
$K create --account 1 --name acme-dev --type test | grep api_key >> "$OUT/keys.txt"
$K create --name ops --admin --type test | grep api_key >> "$OUT/keys.txt"

cat > "$TMP/nginx.conf" <<CONF
$( [ "$(id -u)" = 0 ] && echo "user root;" )
daemon on; worker_processes 1; pid $TMP/logs/nginx.pid;
error_log $TMP/logs/error.log info;
load_module $ROOT/build/ngx_http_aiserve_module.so;
events {}
http {
    access_log off;
    aiserve_model tiny $ROOT/models/tiny-st-cls;
    aiserve_model max $ROOT/models/tiny-st-max;
    aiserve_meter_db $TMP/db flush=100ms;
    aiserve_meter_zone gen_ledger_v2 1m;
    aiserve_price tiny 20000;
    aiserve_price max 7000;
    server {
        listen 127.0.0.1:$PORT;
        location /v1/embeddings { aiserve_infer tiny api=openai; aiserve_meter on; }
        location /max/v1/embeddings { aiserve_infer max api=openai; aiserve_meter on; }
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
curl -sf "http://127.0.0.1:$PORT/max/v1/embeddings" -o /dev/null \
     -H "Authorization: Bearer $S2" -H 'Content-Type: application/json' \
     -d '{"model": "max", "input": ["a b c", "d"]}'
$K revoke key_2
sleep 1
curl -s "http://127.0.0.1:$PORT/max/v1/embeddings" -o /dev/null \
     -H "Authorization: Bearer $S2" -H 'Content-Type: application/json' \
     -d '{"model": "max", "input": "refused"}'
sleep 1
kill -QUIT "$(cat "$TMP/logs/nginx.pid")"
sleep 1
cp "$TMP/db/data.mdb" "$TMP/db/hmac.key" "$OUT/"
$K usage --json --account 1 > "$OUT/usage.txt"
rm -rf "$TMP"
