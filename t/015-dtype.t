# aiserve_model dtype= (issue 14) on a CPU with bf16 products (AVX512-BF16
# or AMX): dtype=bf16 serves embeddings within bf16's rounding of the
# sentence-transformers references, dtype=auto takes bf16 after its parity
# check and logs why, fp32 stays the default, /info and /v1/models say
# which, an invalid value stops nginx -t naming the directive.  t/016-dtype-no-bf16.t covers hosts without.

BEGIN {
    # oneDNN's ISA follows the CPU's flags (lowered by ONEDNN_MAX_CPU_ISA)
    my $flags = '';
    if (open my $f, '<', '/proc/cpuinfo') {
        while (<$f>) { if (/^flags\s*:\s*(.*)/) { $flags = $1; last } }
    }
    if ($flags !~ /\b(avx512_bf16|amx_bf16)\b/
        || ($ENV{ONEDNN_MAX_CPU_ISA} // '') =~ /^(AVX512_CORE|AVX512_CORE_VNNI|AVX2|AVX|SSE41)$/i)
    {
        print "1..0 # SKIP the CPU has neither AVX512-BF16 nor AMX\n";
        exit 0;
    }
}

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;

add_response_body_check(\&AiserveApprox::check);

our @CASES = grep { length $_->{text} } minilm_cases();

sub answer {
    my ($model, @c) = @_;
    my $n = 0;
    $n += @{ $_->{input_ids} } for @c;
    return {
        object => 'list',
        data => [ map { { object => 'embedding', index => $_,
                          embedding => $c[$_]{embedding} } } 0 .. $#c ],
        model => $model,
        usage => { prompt_tokens => $n, total_tokens => $n },
    };
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: dtype=bf16: embeddings within bf16's rounding of the fp32 references, the choice logged
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 dtype=bf16;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /v1/embeddings",
    { input => [ map { $_->{text} } @main::CASES[0 .. 15] ] })
--- json_approx eval
[ main::answer("minilm", @main::CASES[0 .. 15]) ]
--- json_tolerance: 5e-3
--- error_log eval
qr/\[notice\] .*aiserve model "minilm": dtype bf16 \((AMX|AVX512-BF16), 23068672 bytes of packed weights\)/
--- no_error_log
[error]



=== TEST 2: the same answers in fp32 match the references 50 times closer (the tolerance of TEST 1 is bf16's)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 dtype=fp32;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /v1/embeddings",
    { input => [ map { $_->{text} } @main::CASES[0 .. 15] ] })
--- json_approx eval
[ main::answer("minilm", @main::CASES[0 .. 15]) ]
--- json_tolerance: 1e-4
--- error_log eval
qr/\[notice\] .*aiserve model "minilm": dtype fp32 in /
--- no_error_log
[error]



=== TEST 3: dtype=auto takes bf16 after the parity check, and says so
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 dtype=auto;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /v1/embeddings", { input => $main::CASES[3]{text} })
--- json_approx eval
[ main::answer("minilm", $main::CASES[3]) ]
--- json_tolerance: 5e-3
--- error_log eval
qr/\[notice\] .*aiserve model "minilm": dtype bf16 \(auto: (AMX|AVX512-BF16); 12 built-in sentences: min cosine 0\.9999\d+ \(gate 0\.9999\); 23068672 bytes of packed weights\)/
--- no_error_log
[error]



=== TEST 4: dtype=auto on a classifier: the argmax gate, bf16 kept
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls dtype=auto;
--- config
location = /predict {
    aiserve_infer cls;
}
--- more_headers
Content-Type: application/json
--- request
POST /predict
{"inputs": "hello world", "top_k": 1}
--- response_body_like: ^\[\{"label":"\w+","score":[0-9.e-]+\}\]$
--- error_log eval
qr/\[notice\] .*aiserve model "cls": dtype bf16 \(auto: [^;]+; 12 built-in sentences: argmax equal on (\d+) of \1 rows past a top-2 margin of 0\.05; \d+ bytes of packed weights\)/
--- no_error_log
[error]



=== TEST 5: the default is fp32
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: application/json
--- request
POST /predict
{"inputs": "hello world", "top_k": 1}
--- response_body_like: ^\[\{"label":"\w+","score":[0-9.e-]+\}\]$
--- error_log eval
qr/\[notice\] .*aiserve model "cls": dtype fp32 in /
--- no_error_log
[error]



=== TEST 6: TEI's /info and GET /v1/models report the dtype each model runs in
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model b $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls dtype=bf16;
aiserve_model a $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls dtype=auto;
aiserve_model f $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /b/info { aiserve_infer b api=info; }
location = /a/info { aiserve_infer a api=info; }
location = /f/info { aiserve_infer f api=info; }
location /v1/models { aiserve_endpoint models; }
--- request eval
["GET /b/info", "GET /a/info", "GET /f/info", "GET /v1/models",
 "GET /v1/models/b"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[qr/^\{"model_id":"b","model_sha":null,"model_dtype":"bfloat16",/,
 qr/^\{"model_id":"a","model_sha":null,"model_dtype":"bfloat16",/,
 qr/^\{"model_id":"f","model_sha":null,"model_dtype":"float32",/,
 qr/^\{"object":"list","data":\[\{"id":"b",[^}]*"dtype":"bf16"\},\{"id":"a",[^}]*"dtype":"bf16"\},\{"id":"f",[^}]*"dtype":"fp32"\}\]\}$/,
 qr/^\{"id":"b","object":"model","created":\d+,"owned_by":"aiserve","dtype":"bf16"\}$/]
--- no_error_log
[error]



=== TEST 7: an invalid dtype stops nginx -t, naming the directive and the value
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls dtype=fp16;
--- config
--- must_die
--- error_log
invalid dtype "dtype=fp16" in "aiserve_model", use fp32, bf16 or auto
