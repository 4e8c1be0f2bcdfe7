#!/usr/bin/env bash
# Makes t/data/files-v1/: a files store (aiserve_files_store) of version 1,
# whose records have a purpose of 16 bytes, the fixture the migration tests
# open (t/unit/test_files.c, t/070-fine-tuning.t).  Run it in a checkout of
# commit 3ca335d (the last one with files store version 1) after
# "make module tools":
#   tools/gen-files-v1.sh OUT_DIR PORT
# It uploads through that commit's nginx module, as acct_1: a JSONL file,
# a CSV and a file that fails validation; as acct_2: a CoNLL file; then
# lists them with an admin key into OUT_DIR/files.json (the file objects
# the old store answered), and copies the LMDB environment (meta/data.mdb)
# and the contents (file-*) to OUT_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$1
PORT=$2
TMP=$(mktemp -d)
K="$ROOT/tools/aiserve-keys --db $TMP/db"
mkdir -p "$TMP/logs" "$OUT/meta"

A1=$($K create --name alice --type test | sed -n 's/^api_key: //p')
A2=$($K create --name bob --type test | sed -n 's/^api_key: //p')
OPS=$($K create --name ops --admin --type test | sed -n 's/^api_key: //p')

cat > "$TMP/nginx.conf" <<CONF
$( [ "$(id -u)" = 0 ] && echo "user root;" )
daemon on; worker_processes 1; pid $TMP/logs/nginx.pid;
error_log $TMP/logs/error.log info;
load_module $ROOT/build/ngx_http_aiserve_module.so;
events {}
http {
    access_log off;
    client_body_temp_path $TMP/body;
    aiserve_meter_db $TMP/db flush=100ms;
    aiserve_meter_zone gen_files_v1 1m;
    aiserve_files_store $TMP/files tokenizer=$ROOT/models/all-MiniLM-L6-v2;
    server {
        listen 127.0.0.1:$PORT;
        location /v1/files { aiserve_meter on; aiserve_files; }
    }
}
CONF

/usr/sbin/nginx -p "$TMP" -c "$TMP/nginx.conf"
sleep 1

upload() {
    curl -sf "http://127.0.0.1:$PORT/v1/files" -o /dev/null \
         -H "Authorization: Bearer $1" -F purpose=fine-tune -F "file=@$2"
    sleep 0.01
}
printf '{"text": "fine", "label": "a"}\n{"text": "", "label": "b"}\n' \
    > "$TMP/bad.jsonl"
upload "$A1" "$ROOT/t/data/train/sentiment-train.jsonl"
upload "$A1" "$ROOT/t/data/train/classify.csv"
upload "$A1" "$TMP/bad.jsonl"
upload "$A2" "$ROOT/t/data/train/ner.conll"
curl -sf "http://127.0.0.1:$PORT/v1/files?order=asc" \
     -H "Authorization: Bearer $OPS" > "$OUT/files.json"

kill -QUIT "$(cat "$TMP/logs/nginx.pid")"
sleep 1
cp "$TMP/files/meta/data.mdb" "$OUT/meta/"
cp "$TMP"/files/file-* "$OUT/"
rm -rf "$TMP"
