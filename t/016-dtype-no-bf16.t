# aiserve_model dtype= on a host without bf16 products, made here by
# lowering oneDNN's ISA to AVX-512 without BF16 (ONEDNN_MAX_CPU_ISA, read
# by the nginx that Test::Nginx starts): dtype=bf16 is an [emerg] naming
# the CPU feature missing (never oneDNN's slow bf16 emulation), dtype=auto
# keeps fp32, says why, and /info and /v1/models report fp32.  Runs on every x86-64 host.

use Test::Nginx::Socket 'no_plan';

$ENV{ONEDNN_MAX_CPU_ISA} = 'AVX512_CORE';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: dtype=bf16 without AVX512-BF16 or AMX stops nginx -t
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls dtype=bf16;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"dtype=bf16" in "aiserve_model": the CPU has (AVX-512 without BF16 or AMX|AVX2 without AVX512-BF16 or AMX|no AVX512-BF16 or AMX); bf16 needs AVX512-BF16 or AMX/



=== TEST 2: dtype=auto keeps fp32 and says why
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls dtype=auto;
--- config
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: application/json
--- request
POST /predict
{"inputs": "hello world", "top_k": 1}
--- response_body_like: ^\[\{"label":"\w+","score":[0-9.e-]+\}\]$
--- error_log eval
qr/\[notice\] .*aiserve model "cls": dtype fp32 \(auto: the CPU has (AVX-512 without BF16 or AMX|AVX2 without AVX512-BF16 or AMX|no AVX512-BF16 or AMX)\)/
--- no_error_log
[error]



=== TEST 3: /info and /v1/models say fp32 for the model auto kept in fp32
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls dtype=auto;
--- config
location = /info { aiserve_infer cls api=info; }
location /v1/models { aiserve_endpoint models; }
--- request eval
["GET /info", "GET /v1/models/cls"]
--- response_body_like eval
[qr/^\{"model_id":"cls","model_sha":null,"model_dtype":"float32",/,
 qr/^\{"id":"cls","object":"model","created":\d+,"owned_by":"aiserve","dtype":"fp32"\}$/]
--- no_error_log
[error]
