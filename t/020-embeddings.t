# Embeddings end to end with the real all-MiniLM-L6-v2 (make deps fetches
# it): OpenAI /v1/embeddings and TEI /embed against the sentence-transformers
# reference values in t/data/encoder-minilm.jsonl, every input shape,
# base64, dimensions, and TEI /tokenize.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;
use MIME::Base64 ();

add_response_body_check(\&AiserveApprox::check);

# texts with at least one token besides [CLS] and [SEP]
our @CASES = grep { length $_->{text} } minilm_cases();
our @FIRST = @CASES[0 .. 7];
our @LONG = (grep { @{ $_->{input_ids} } == 256 } @CASES)[0 .. 3];

# the OpenAI answer for a list of cases
sub openai_answer {
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

sub unit {
    my @v = @_;
    my $s = 0;
    $s += $_ * $_ for @v;
    $s = sqrt $s;
    return [ map { $_ / $s } @v ];
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: /v1/embeddings, one string
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /v1/embeddings", { input => $main::CASES[1]{text} })
--- response_headers
Content-Type: application/json
--- json_approx eval
[ main::openai_answer("minilm", $main::CASES[1]) ]
--- no_error_log
[error]



=== TEST 2: /v1/embeddings, every reference text in one request (several batches), truncate=on as sentence-transformers
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /v1/embeddings",
             { input => [ map { $_->{text} } @main::CASES ],
               model => "minilm" })
--- json_approx eval
[ main::openai_answer("minilm", @main::CASES) ]
--- timeout: 60
--- no_error_log
[error]



=== TEST 3: /v1/embeddings, token ids: one array and an array of arrays
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
[ AiserveApprox::json_request("POST /v1/embeddings",
               { input => $main::CASES[2]{input_ids} }),
  AiserveApprox::json_request("POST /v1/embeddings",
               { input => [ map { $_->{input_ids} } @main::FIRST ] }) ]
--- json_approx eval
[ main::openai_answer("minilm", $main::CASES[2]),
  main::openai_answer("minilm", @main::FIRST) ]
--- no_error_log
[error]



=== TEST 4: /v1/embeddings, encoding_format base64 is little-endian float32
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /v1/embeddings",
             { input => [ map { $_->{text} } @main::FIRST[0, 1] ],
               encoding_format => "base64" })
--- response_body_filters eval
sub {
    my $r = JSON::PP->new->decode($_[0]);
    $_->{embedding} = [ unpack "f<*", MIME::Base64::decode_base64(
                                          $_->{embedding}) ]
        for @{ $r->{data} };
    return JSON::PP->new->encode($r);
}
--- json_approx eval
[ main::openai_answer("minilm", @main::FIRST[0, 1]) ]
--- no_error_log
[error]



=== TEST 5: /v1/embeddings, dimensions shortens and renormalizes
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /v1/embeddings",
             { input => $main::CASES[3]{text}, dimensions => 8 })
--- json_approx eval
[ { object => 'list', model => 'minilm',
    usage => { prompt_tokens => scalar @{ $main::CASES[3]{input_ids} },
               total_tokens => scalar @{ $main::CASES[3]{input_ids} } },
    data => [ { object => 'embedding', index => 0,
                embedding => main::unit(
                    @{ $main::CASES[3]{embedding} }[0 .. 7]) } ] } ]
--- no_error_log
[error]



=== TEST 6: TEI /embed: a string, a list, normalize, dimensions
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /embed {
    aiserve_infer minilm api=embed;
}
--- more_headers
Content-Type: application/json
--- request eval
[ AiserveApprox::json_request("POST /embed", { inputs => $main::CASES[4]{text} }),
  AiserveApprox::json_request("POST /embed",
               { inputs => [ map { $_->{text} } @main::FIRST ],
                 normalize => JSON::PP::true }),
  AiserveApprox::json_request("POST /embed",
               { inputs => [ $main::CASES[5]{text} ],
                 normalize => JSON::PP::false, truncate => JSON::PP::true }),
  AiserveApprox::json_request("POST /embed",
               { inputs => $main::CASES[5]{text}, dimensions => 3 }) ]
--- json_approx eval
[ [ $main::CASES[4]{embedding} ],
  [ map { $_->{embedding} } @main::FIRST ],
  [ $main::CASES[5]{embedding} ],
  [ main::unit(@{ $main::CASES[5]{embedding} }[0 .. 2]) ] ]
--- no_error_log
[error]



=== TEST 7: TEI /tokenize: ids, special tokens, code point offsets
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /tokenize {
    aiserve_infer minilm api=tokenize;
}
--- more_headers
Content-Type: application/json
--- request eval
[ AiserveApprox::json_request("POST /tokenize", { inputs => "H\x{e9}llo, w\x{f6}rld!" }),
  AiserveApprox::json_request("POST /tokenize", { inputs => ["a b", "x"],
                                   add_special_tokens => JSON::PP::false }) ]
--- json_approx eval
[ [ [ { id => 101, text => "[CLS]", special => JSON::PP::true,
        start => 0, stop => 0 },
      { id => 7592, text => "H\x{e9}llo", special => JSON::PP::false,
        start => 0, stop => 5 },
      { id => 1010, text => ",", special => JSON::PP::false,
        start => 5, stop => 6 },
      { id => 2088, text => "w\x{f6}rld", special => JSON::PP::false,
        start => 7, stop => 12 },
      { id => 999, text => "!", special => JSON::PP::false,
        start => 12, stop => 13 },
      { id => 102, text => "[SEP]", special => JSON::PP::true,
        start => 0, stop => 0 } ] ],
  [ [ { id => 1037, text => "a", special => JSON::PP::false,
        start => 0, stop => 1 },
      { id => 1038, text => "b", special => JSON::PP::false,
        start => 2, stop => 3 } ],
    [ { id => 1060, text => "x", special => JSON::PP::false,
        start => 0, stop => 1 } ] ] ]
--- no_error_log
[error]



=== TEST 8: the variables in the access log
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
log_format ai 'AI model=$aiserve_model tokens=$aiserve_prompt_tokens '
              'infer=$aiserve_infer_time queue=$aiserve_queue_time '
              'batch=$aiserve_batch_size';
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
    access_log $TEST_NGINX_SERVER_ROOT/logs/ai.log ai;
    error_log $TEST_NGINX_SERVER_ROOT/logs/error.log debug;
}
location = /log {
    alias $TEST_NGINX_SERVER_ROOT/logs/ai.log;
}
--- more_headers
Content-Type: application/json
--- request eval
[ AiserveApprox::json_request("POST /v1/embeddings", { input => ["hello world", "a"] }),
  "GET /log" ]
--- response_body_like eval
[ qr/"prompt_tokens":7/,
  qr/^AI model=minilm tokens=7 infer=0\.\d{6} queue=0\.\d{6} batch=2$/m ]
--- no_error_log
[error]



=== TEST 9: aiserve_threads 2 gives the same embeddings as one thread
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_threads 2;
--- config
location = /embed { aiserve_infer minilm api=embed; }
--- more_headers
Content-Type: application/json
--- request eval
AiserveApprox::json_request("POST /embed",
    { inputs => [ map { $_->{text} } @main::FIRST, @main::LONG ] })
--- json_approx eval
[ [ map { $_->{embedding} } @main::FIRST, @main::LONG ] ]
--- timeout: 60
--- no_error_log
[error]
