# Directives: aiserve_model (parameters, loading, errors at configuration
# time: nginx -t is the operator's first test), aiserve_infer (api=, model
# look-up), aiserve_thread_pool, aiserve_threads, aiserve_max_batch_tokens,
# aiserve_max_queue, aiserve_queue_timeout, aiserve_max_inputs,
# aiserve_retry_after, aiserve_log_level, aiserve_max_request_tokens.

use Test::Nginx::Socket 'no_plan';
use File::Spec ();
use File::Temp ();

# a ledger directory for the block that needs aiserve_meter_db
$ENV{TEST_NGINX_LEDGER_DIR} = File::Temp::tempdir(CLEANUP => 1);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: every directive, set explicitly
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
thread_pool ai threads=2 max_queue=16;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls task=classify max_seq=64 truncate=on device=cpu;
aiserve_thread_pool ai;
aiserve_threads 2;
aiserve_max_batch_tokens 4k;
aiserve_max_queue 8;
aiserve_queue_timeout 2s;
aiserve_max_inputs 4;
aiserve_retry_after 3;
aiserve_log_level error;
--- config
location = /predict {
    aiserve_infer cls api=predict;
}
--- more_headers
Content-Type: application/json
--- request
POST /predict
{"inputs": "paris", "top_k": 1, "function_to_apply": "none"}
--- response_body_like: ^\[\{"label":"(positive|negative)","score":-?[0-9.e-]+\}\]$
--- error_log eval
qr/aiserve batch "cls": 1 sequences, 3 tokens, 1 requests/
--- no_error_log
[error]



=== TEST 2: a relative model path is relative to the configuration file
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config eval
"aiserve_model cls "
. File::Spec->abs2rel("$ENV{TEST_NGINX_AISERVE_ROOT}/models/tiny-bert-seq-cls",
                      "$ENV{TEST_NGINX_SERVER_ROOT}/conf") . ";"
--- config
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: application/json
--- request
POST /predict
{"inputs": ["a", "b"]}
--- response_body_like: ^\[\{"label":"\w+","score":[0-9.e-]+\},\{"label":"\w+","score":[0-9.e-]+\}\]$
--- no_error_log
[error]



=== TEST 3: a missing model directory stops nginx -t, naming the directive and the path
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model broken /nonexistent/model;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_model" "broken": cannot load the tokenizer from "\/nonexistent\/model": /



=== TEST 4: a directory with a tokenizer but no weights
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model broken $TEST_NGINX_AISERVE_ROOT/t/data/tokenizers/bert-base-cased;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_model" "broken": cannot load the model from "[^"]+": .*config\.json/



=== TEST 5: invalid task
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls task=translate;
--- config
--- must_die
--- error_log
invalid task "translate" in "aiserve_model", use embed, classify, ner or rerank



=== TEST 6: a task that does not fit the checkpoint
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls task=ner;
--- config
--- must_die
--- error_log eval
qr/"aiserve_model" "m": task=ner does not fit the model in "[^"]+tiny-bert-seq-cls", which is for task=classify/



=== TEST 7: invalid max_seq, and max_seq above max_position_embeddings
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls max_seq=lots;
--- config
--- must_die
--- error_log
invalid max_seq "max_seq=lots" in "aiserve_model"



=== TEST 8: max_seq above max_position_embeddings
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls max_seq=4096;
--- config
--- must_die
--- error_log
invalid max_seq=4096 in "aiserve_model" "m": the model has max_position_embeddings 128



=== TEST 10: unknown parameter
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls pooling=mean;
--- config
--- must_die
--- error_log
invalid parameter "pooling=mean" in "aiserve_model"



=== TEST 11: duplicate model name
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
--- config
--- must_die
--- error_log
duplicate model "m" in "aiserve_model"



=== TEST 12: aiserve_model is an http-level directive
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- config
location = /x {
    aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
}
--- must_die
--- error_log
"aiserve_model" directive is not allowed here



=== TEST 13: aiserve_infer with an unknown model
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x { aiserve_infer other; }
--- must_die
--- error_log
unknown model "other" in "aiserve_infer", declare it with "aiserve_model" at the http level



=== TEST 14: aiserve_infer api that does not fit the model's task
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x { aiserve_infer m api=openai; }
--- must_die
--- error_log
"aiserve_infer" api=openai does not fit model "m" (task=classify)



=== TEST 15: aiserve_infer with an invalid api or parameter
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x { aiserve_infer m api=grpc; }
--- must_die
--- error_log
invalid api "grpc" in "aiserve_infer", use openai, embed, predict, rerank, tokenize, ner, decode, similarity, embed_all, info or tei



=== TEST 16: aiserve_infer twice in a location
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x { aiserve_infer m; aiserve_infer m; }
--- must_die
--- error_log
"aiserve_infer" directive is duplicate



=== TEST 17: aiserve_max_batch_tokens below a model's max_seq
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_max_batch_tokens 64;
--- config
--- must_die
--- error_log
"aiserve_max_batch_tokens" 64 is less than max_seq=128 of model "m"



=== TEST 18: aiserve_thread_pool naming a pool that thread_pool does not define
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_thread_pool nosuchpool;
--- config
--- must_die
--- error_log
unknown thread pool "nosuchpool"



=== TEST 19: aiserve_threads bounds
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_threads 0;
--- config
--- must_die
--- error_log
invalid value "0" in "aiserve_threads", must be between 1 and 256



=== TEST 20: aiserve_max_queue must be positive
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_max_queue 0;
--- config
--- must_die
--- error_log
invalid value "0" in "aiserve_max_queue", must be 1 or more



=== TEST 21: aiserve_max_inputs must be positive
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_max_inputs 0;
--- config
--- must_die
--- error_log
invalid value "0" in "aiserve_max_inputs", must be 1 or more



=== TEST 22: aiserve_max_request_tokens must be positive
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- config
location = /x { aiserve_max_request_tokens 0; }
--- must_die
--- error_log
invalid value "0" in "aiserve_max_request_tokens", must be 1 or more



=== TEST 23: aiserve_log_level takes info, notice, warn or error
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_log_level debug;
--- config
--- must_die
--- error_log
invalid value "debug" in "aiserve_log_level", use info, notice, warn or error



=== TEST 24: aiserve_infer after another content handler in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x { stub_status; aiserve_infer m; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/



=== TEST 25: aiserve_infer after aiserve_usage in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /x { aiserve_usage; aiserve_infer m; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/



=== TEST 26: aiserve_infer before stub_status in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x {
    aiserve_infer m;
    stub_status;
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 27: aiserve_infer before proxy_pass in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x {
    aiserve_infer m;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/;
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 28: aiserve_infer after proxy_pass in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x { proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/; aiserve_infer m; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 29: aiserve_infer before fastcgi_pass in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x {
    aiserve_infer m;
    fastcgi_pass 127.0.0.1:9;
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 30: aiserve_infer after fastcgi_pass in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x { fastcgi_pass 127.0.0.1:9; aiserve_infer m; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 31: aiserve_infer before aiserve_usage in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /x { aiserve_infer m; aiserve_usage; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 32: aiserve_usage before stub_status in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /x {
    aiserve_usage;
    stub_status;
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 33: aiserve_usage after stub_status in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /x { stub_status; aiserve_usage; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 34: aiserve_usage before proxy_pass in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /x {
    aiserve_usage;
    proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/;
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 35: aiserve_usage after proxy_pass in the same location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /x { proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/; aiserve_usage; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 36: an "if" block inside an aiserve_infer location answers with its model
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict {
    aiserve_infer m;
    if ($arg_tag) {
        add_header X-Tag $arg_tag;
    }
}
--- more_headers
Content-Type: application/json
--- request
POST /predict?tag=blue
{"inputs": "paris"}
--- response_headers
X-Tag: blue
--- response_body_like: ^\[\{"label":"(positive|negative)","score":[0-9.e-]+\}\]$
--- no_error_log
[error]
[alert]


=== TEST 37: a method that limit_except lets through gets aiserve's 405, not a static file
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict {
    aiserve_infer m;
    limit_except POST {
        allow 127.0.0.1;
        deny all;
    }
}
--- request
GET /predict
--- error_code: 405
--- response_headers
Allow: POST
Content-Type: application/json
--- response_body_like: "code":"method_not_allowed"
--- no_error_log
[error]


=== TEST 38: the module loads and nginx serves without any aiserve_model
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- config
location = /t { return 200 "plain\n"; }
--- request
GET /t
--- response_body
plain
--- no_error_log
[error]



=== TEST 39: proxy_pass inside limit_except of an aiserve_infer location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /x {
    aiserve_infer m;
    limit_except GET { proxy_pass http://127.0.0.1:9; }
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/x" in \S+nginx.conf:\d+/


=== TEST 40: proxy_pass inside "if" of an aiserve_infer location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /z {
    if ($http_x_a) { proxy_pass http://127.0.0.1:9; }
    aiserve_infer m;
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_infer" cannot be combined with another content handler in location "\/z" in \S+nginx.conf:\d+/


=== TEST 41: proxy_pass inside "if" of an aiserve_usage location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /u {
    aiserve_usage;
    if ($http_x_a) { proxy_pass http://127.0.0.1:9; }
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/u" in \S+nginx.conf:\d+/


=== TEST 42: proxy_pass inside limit_except of an aiserve_admin location stops nginx
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_meter_db $TEST_NGINX_LEDGER_DIR;
aiserve_meter_zone meter010 1m;
--- config
location = /a {
    aiserve_admin;
    limit_except GET { proxy_pass http://127.0.0.1:9; }
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_admin" cannot be combined with another content handler in location "\/a" in \S+nginx.conf:\d+/


=== TEST 43: an "if" block of an api=info location answers with the info
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /info {
    aiserve_infer m api=info;
    if ($arg_tag) { add_header X-Tag $arg_tag; }
}
--- request
GET /info?tag=blue
--- response_headers
X-Tag: blue
--- response_body_like: "model_id":"m"
--- no_error_log
[error]
