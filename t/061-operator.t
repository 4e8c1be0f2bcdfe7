# The operator routes: aiserve_endpoint health (200; the 503 is in
# t/062-health.t, which needs a single worker), models (OpenAI's GET /v1/models and
# /v1/models/{id}), metrics (Prometheus: checked with promtool, counters
# summed over the workers through the shared zone and kept across a
# reload, per-key counters and ledger flushes when metered), and TEI's
# /info (api=info) and GET / (api=tei).

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;
use AiserveTest qw(aiserve_http aiserve_http_concurrent aiserve_request);
use AiserveMeter qw(meter_db meter_create_key meter_embed_request
                    meter_usage);
use File::Temp ();
use JSON::PP ();
use Time::HiRes ();

add_response_body_check(\&AiserveApprox::check);

our @MINILM = grep { length $_->{text} } minilm_cases();
our @LONG = (grep { @{ $_->{input_ids} } == 256 } @MINILM)[0 .. 15];
@LONG = (@LONG) x 2;
my $json = JSON::PP->new->utf8->canonical;
my $db = meter_db('061');
my @keys = map { [meter_create_key($db, '--name', "metrics$_")] } 1 .. 2;
$ENV{TEST_NGINX_METER_DB} = $db;

sub err {
    my ($type, $code, $param, $message) = @_;
    return { error => { message => $message, type => $type, code => $code,
                        param => $param } };
}

sub post {
    my ($uri, $body) = @_;
    return aiserve_request({ uri => $uri, body => $json->encode($body),
                             headers => [ 'Content-Type' => 'application/json' ] });
}

sub get {
    my ($uri) = @_;
    return aiserve_http(server_port(), { method => 'GET', uri => $uri });
}

# the samples of an exposition: { 'name{labels}' => value }
sub samples {
    my ($text) = @_;
    my %s;
    for (split /\n/, $text) {
        next if /^#/ || !/\S/;
        my ($k, $v) = /^(\S+(?:\{[^}]*\})?) (\S+)$/ or next;
        $s{$k} = $v;
    }
    return \%s;
}

# promtool's verdict on an exposition: '' when it is valid
sub promtool {
    my ($text) = @_;
    my ($in, $file) = File::Temp::tempfile(UNLINK => 1);
    print $in $text;
    close $in;
    my $out = `promtool check metrics < $file 2>&1`;
    return $? == 0 ? '' : "promtool: $out";
}

my %scenario = (

    # 24 requests over two workers, then every scrape (any worker) sees
    # all of them, and the exposition is valid
    metrics => sub {
        my ($name) = @_;
        my @reqs = map { post('/v1/embeddings', { input => $MINILM[$_]{text} }) }
                   0 .. 23;
        push @reqs, post('/v1/embeddings', { input => 3 }) for 1 .. 2;
        my @res = aiserve_http_concurrent(server_port(), \@reqs, 8,
                                          timeout => 60);
        my $ok = grep { ($_->{status} // 0) == 200 } @res;
        Test::More::is($ok, 24, "$name - 24 answered 200");
        Time::HiRes::sleep(0.3);    # counted in the log phase, after the
                                    # answer went out
        my $tokens = 0;
        $tokens += @{ $MINILM[$_]{input_ids} } for 0 .. 23;
        for my $i (1 .. 6) {
            my $r = aiserve_http(server_port(),
                                 { method => 'GET', uri => '/metrics' });
            my $s = samples($r->{body});
            Test::More::is($r->{headers}{'content-type'},
                           'text/plain; version=0.0.4; charset=utf-8',
                           "$name - scrape $i content type");
            Test::More::is(promtool($r->{body}), '',
                           "$name - scrape $i passes promtool check metrics");
            Test::More::is(
                $s->{'aiserve_requests_total{model="m61",route="openai",status="200"}'},
                24, "$name - scrape $i counts the 24 requests of both workers");
            Test::More::is(
                $s->{'aiserve_requests_total{model="m61",route="openai",status="422"}'},
                2, "$name - scrape $i counts the 2 refused ones");
            Test::More::is($s->{'aiserve_prompt_tokens_total{model="m61"}'},
                           $tokens, "$name - scrape $i counts their tokens");
            Test::More::is(
                $s->{'aiserve_inference_time_seconds_count{model="m61"}'},
                24, "$name - scrape $i: 24 inference times observed");
            Test::More::is(
                $s->{'aiserve_queue_time_seconds_bucket{model="m61",le="+Inf"}'},
                24, "$name - scrape $i: 24 queue times observed");
            Test::More::cmp_ok(
                $s->{'aiserve_batch_size_count{model="m61"}'}, '>=', 1,
                "$name - scrape $i: batches observed");
            Test::More::is($s->{'aiserve_batch_tokens_total{model="m61"}'},
                           $tokens, "$name - scrape $i: batch tokens");
            Test::More::ok(
                exists $s->{'aiserve_queue_depth{model="m61",worker="1"}'},
                "$name - scrape $i: a queue depth per worker");
        }
    },

    # the counters outlive a reload (the zone and the model's slot are
    # reused)
    reload => sub {
        my ($name) = @_;
        my @res = aiserve_http_concurrent(server_port(),
            [ map { post('/v1/embeddings', { input => $MINILM[$_]{text} }) }
              0 .. 4 ], 5, timeout => 60);
        Time::HiRes::sleep(0.3);
        my $before = samples(get('/metrics')->{body});
        Test::More::is(
            $before->{'aiserve_requests_total{model="m62",route="openai",status="200"}'},
            5, "$name - 5 requests counted");
        open my $f, '<', server_root() . '/logs/nginx.pid' or die $!;
        my $pid = <$f>;
        chomp $pid;
        kill 'HUP', $pid;
        Time::HiRes::sleep(1.5);
        aiserve_http_concurrent(server_port(),
            [ post('/v1/embeddings', { input => $MINILM[5]{text} }) ], 1,
            timeout => 60);
        Time::HiRes::sleep(0.3);
        my $after = samples(get('/metrics')->{body});
        Test::More::is(
            $after->{'aiserve_requests_total{model="m62",route="openai",status="200"}'},
            6, "$name - after the reload: the 5 and 1 more");
    },

    # metered: per-key counters and the ledger's flushes
    metered => sub {
        my ($name) = @_;
        my @reqs = map { meter_embed_request($keys[$_ % 2][1], "text $_",
                                             model => 'm64') } 0 .. 9;
        my @res = aiserve_http_concurrent(server_port(), \@reqs, 4,
                                          timeout => 60);
        Test::More::is(scalar(grep { ($_->{status} // 0) == 200 } @res), 10,
                       "$name - 10 metered requests answered");
        Time::HiRes::sleep(0.8);    # flush=200ms
        my $u = meter_usage($db);
        my $body = get('/metrics')->{body};
        my $s = samples($body);
        Test::More::is(promtool($body), '', "$name - promtool check metrics");
        for my $k (@keys) {
            Test::More::is($s->{"aiserve_key_requests_total{key=\"$k->[0]\"}"},
                           5, "$name - $k->[0]: 5 requests");
            Test::More::is(
                $s->{"aiserve_key_prompt_tokens_total{key=\"$k->[0]\"}"},
                $u->{ $k->[0] }{prompt_tokens},
                "$name - $k->[0]: the tokens the ledger charged");
        }
        Test::More::cmp_ok($s->{'aiserve_ledger_flushes_total{result="ok"}'},
                           '>=', 1, "$name - ledger flushes counted");
        Test::More::is(
            $s->{'aiserve_requests_total{model="m64",route="openai",status="200"}'},
            10, "$name - the 10 requests by model, route and status");

        # refused by the meter before the content handler: counted too
        aiserve_http_concurrent(server_port(),
            [ map { meter_embed_request(undef, "no key", model => 'm64') }
              1 .. 3 ], 3, timeout => 60);
        Time::HiRes::sleep(0.3);
        $s = samples(get('/metrics')->{body});
        Test::More::is(
            $s->{'aiserve_requests_total{model="m64",route="openai",status="401"}'},
            3, "$name - the meter's 401s counted by model and route");
    },
);

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeat_idx) = @_;
    my $scenario = $block->scenario or return;
    $scenario{$scenario}->($block->name);
});

no_shuffle();
master_on();
workers(2);
run_tests();

__DATA__

=== TEST 1: /health: 200 {"status":"ok"}; POST is 405
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /health { aiserve_endpoint health; }
--- request eval
["GET /health", "POST /health\n{}"]
--- error_code eval
[200, 405]
--- response_headers eval
["Content-Type: application/json", "Allow: GET, HEAD"]
--- json_approx eval
[{ status => "ok" },
 main::err("invalid_request_error", "method_not_allowed", undef,
           "method POST is not allowed, use GET")]
--- no_error_log
[error]



=== TEST 2: HEAD /health
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /health { aiserve_endpoint health; }
--- request
HEAD /health
--- response_headers
Content-Type: application/json
Content-Length: 16
--- response_body
--- no_error_log
[error]



=== TEST 3: GET / on an api=tei location is TEI's health check; POST / infers
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = / { aiserve_infer cls api=tei; }
--- more_headers
Content-Type: application/json
--- request eval
["GET /", "POST /\n{\"inputs\": \"I love this\", \"top_k\": 0}"]
--- json_approx eval
[{ status => "ok" }, []]
--- no_error_log
[error]



=== TEST 4: GET /v1/models and /v1/models/{id} in OpenAI's shape
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location /v1/models { aiserve_endpoint models; }
--- request eval
["GET /v1/models", "GET /v1/models/", "GET /v1/models/cls",
 "GET /v1/models/gpt-4", "GET /v1/modelsminilm"]
--- error_code eval
[200, 200, 200, 404, 404]
--- response_body_like eval
[qr/^\{"object":"list","data":\[\{"id":"minilm","object":"model","created":1\d{9},"owned_by":"aiserve","dtype":"fp32"\},\{"id":"cls","object":"model","created":1\d{9},"owned_by":"aiserve","dtype":"fp32"\}\]\}$/,
 qr/^\{"object":"list","data":\[\{"id":"minilm",.*\{"id":"cls",/,
 qr/^\{"id":"cls","object":"model","created":1\d{9},"owned_by":"aiserve","dtype":"fp32"\}$/,
 qr/^\{"error":\{"message":"the model \\"gpt-4\\" does not exist","type":"invalid_request_error","param":"model","code":"model_not_found"\}\}$/,
 qr/^\{"error":\{"message":"no such route \\"\/v1\/modelsminilm\\"","type":"invalid_request_error","param":null,"code":"not_found"\}\}$/]
--- no_error_log
[error]



=== TEST 5: TEI's /info for an embedding model, a classifier, a reranker and NER
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_model rr $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression task=rerank;
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
aiserve_max_batch_tokens 4096;
aiserve_max_queue 100;
--- config
location = /info { aiserve_infer minilm api=info; aiserve_max_inputs 32; }
location = /cls/info { aiserve_infer cls api=info; }
location = /rr/info { aiserve_infer rr api=info; }
location = /ner/info { aiserve_infer ner api=info; }
--- request eval
["GET /info", "GET /cls/info", "GET /rr/info", "GET /ner/info"]
--- json_approx eval
[ map { my ($id, $type, $len, $trunc, $batch) = @$_;
        { model_id => $id, model_sha => undef, model_dtype => "float32",
          served_model_name => $id, model_type => $type,
          max_concurrent_requests => 200, max_input_length => $len,
          max_batch_tokens => 4096, max_batch_requests => undef,
          max_client_batch_size => $batch, auto_truncate => $trunc,
          tokenization_workers => 2, version => "0.9.0", sha => undef,
          docker_label => undef } }
  ["minilm", { embedding => { pooling => "mean" } }, 256, JSON::PP::true, 32],
  ["cls", { classifier => { id2label => { 0 => "negative", 1 => "positive" },
                            label2id => { negative => 0, positive => 1 } } },
   128, JSON::PP::false, 2048],
  ["rr", { reranker => { id2label => { 0 => "score" },
                         label2id => { score => 0 } } },
   128, JSON::PP::false, 2048],
  ["ner", { token_classifier => {
              id2label => { 0 => "O", 1 => "B-PER", 2 => "I-PER",
                            3 => "B-ORG", 4 => "I-ORG", 5 => "B-LOC",
                            6 => "I-LOC", 7 => "B-MISC", 8 => "I-MISC" },
              label2id => { O => 0, "B-PER" => 1, "I-PER" => 2,
                            "B-ORG" => 3, "I-ORG" => 4, "B-LOC" => 5,
                            "I-LOC" => 6, "B-MISC" => 7, "I-MISC" => 8 } } },
   128, JSON::PP::false, 2048] ]
--- no_error_log
[error]



=== TEST 6: aiserve_endpoint: an unknown value
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /status { aiserve_endpoint status; }
--- must_die
--- error_log
invalid value "status" in "aiserve_endpoint", use health, models or metrics



=== TEST 7: aiserve_endpoint after another content handler
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /metrics { aiserve_infer cls; aiserve_endpoint metrics; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_endpoint" cannot be combined with another content handler in location "\/metrics" in \S+nginx.conf:\d+/



=== TEST 8: aiserve_endpoint before another content handler
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /metrics { aiserve_endpoint metrics; stub_status; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_endpoint" cannot be combined with another content handler in location "\/metrics" in \S+nginx.conf:\d+/



=== TEST 8a: proxy_pass inside limit_except of an aiserve_endpoint location
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /health {
    aiserve_endpoint health;
    limit_except GET { proxy_pass http://127.0.0.1:9; }
}
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_endpoint" cannot be combined with another content handler in location "\/health" in \S+nginx.conf:\d+/



=== TEST 8b: an "if" block of an aiserve_endpoint location answers with it
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /v1/models {
    aiserve_endpoint models;
    if ($arg_tag) { add_header X-Tag $arg_tag; }
}
--- request
GET /v1/models?tag=blue
--- response_headers
X-Tag: blue
--- response_body_like: "object":"list"
--- no_error_log
[error]



=== TEST 9: /metrics: promtool-valid, counters of both workers in every scrape
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m61 $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings { aiserve_infer m61; }
location = /metrics { aiserve_endpoint metrics; }
--- request
GET /metrics
--- response_body_like: # TYPE aiserve_requests_total counter
--- scenario: metrics
--- timeout: 60
--- no_error_log
[error]



=== TEST 10: the counters outlive a reload
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m62 $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings { aiserve_infer m62; }
location = /metrics { aiserve_endpoint metrics; }
--- request
GET /metrics
--- response_body_like: aiserve_prompt_tokens_total\{model="m62"\} 0
--- scenario: reload
--- timeout: 60
--- no_error_log
[error]



=== TEST 10a: GET /info and TEI's GET / are not counted in aiserve_requests_total
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m63 $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
--- config
location = /info { aiserve_infer m63 api=info; }
location = / { aiserve_infer m63 api=tei; }
location = /metrics { aiserve_endpoint metrics; }
--- request eval
["GET /info", "GET /", "GET /metrics"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"model_id":"m63"/, qr/^\{"status":"ok"\}$/,
 qr/^# HELP aiserve_requests_total Requests of aiserve_infer locations by model, route \(api=\) and HTTP status; not api=info, not GET or HEAD on api=tei\.\n(?!.*aiserve_requests_total\{model="m63").*aiserve_prompt_tokens_total\{model="m63"\} 0/s]
--- no_error_log
[error]



=== TEST 11: metered: per-key counters, ledger flushes
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m64 $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
aiserve_meter_db $TEST_NGINX_METER_DB flush=200ms;
aiserve_meter_zone meter61 1m;
--- config
location = /v1/embeddings { aiserve_infer m64; aiserve_meter on; }
location = /metrics { aiserve_endpoint metrics; }
--- request
GET /metrics
--- response_body_like: aiserve_ledger_flushes_total
--- scenario: metered
--- timeout: 60
--- no_error_log
[error]



=== TEST 12: every worker pins the module (RTLD_NODELETE): the threads of nginx's thread pools, never joined, may still run the engine's key destructors when the worker unloads its modules at exit
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m65 $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
--- config
location = /v1/embeddings { aiserve_infer m65; }
--- more_headers
Content-Type: application/json
--- request
POST /v1/embeddings
{"input": ["one", "two words", "three words here"]}
--- response_body_like: "object":"list"
--- grep_error_log eval: qr/aiserve: module pinned: \S+ngx_http_aiserve_module\.so/
--- grep_error_log_out eval
[qr/^(aiserve: module pinned: \S+\n){2}$/]
--- no_error_log
[error]
[warn]
