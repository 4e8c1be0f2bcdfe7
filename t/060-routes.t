# The routes TEI and Hugging Face's clients call, against the references of
# t/data/routes-fixtures.json (tools/gen-routes-fixtures.py): /decode
# (tokenizers' decode), /similarity (sentence-transformers' cos_sim),
# /embed_all (transformers' last_hidden_state), TEI's POST / (api=tei: the
# model's own route), Hugging Face's {"inputs", "parameters"} shape,
# fields a route does not know (422 unknown_field), "model" naming another
# model (404 model_not_found), and /tokenize returning every token.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;
use AiserveTest qw(aiserve_http_concurrent aiserve_request);
use JSON::PP ();

add_response_body_check(\&AiserveApprox::check);

our @DECODE = routes_fixture('decode');
our @SIMILARITY = routes_fixture('similarity');
our @HIDDEN = routes_fixture('embed_all');
our @TOKENIZE = routes_fixture('tokenize');
our @HF_CLASSIFY = routes_fixture('hf_classify');
our @NER = fixture('ner');
our @MINILM = grep { length $_->{text} && @{ $_->{input_ids} } < 40 }
              minilm_cases();
my $json = JSON::PP->new->utf8->canonical;

sub requests {
    my ($uri, @cases) = @_;
    return [ map { AiserveApprox::json_request("POST $uri", $_->{request}) }
             @cases ];
}

sub answers { [ map { $_->{response} } @_ ] }

# OpenAI's answer for one MiniLM case, with the model that served
sub openai {
    my ($c) = @_;
    my $n = scalar @{ $c->{input_ids} };
    return { object => 'list', model => 'minilm',
             data => [ { object => 'embedding', index => 0,
                         embedding => $c->{embedding} } ],
             usage => { prompt_tokens => $n, total_tokens => $n } };
}

sub err {
    my ($status_type, $code, $param, $message) = @_;
    return { error => { message => $message, type => $status_type,
                        code => $code, param => $param } };
}

# Hugging Face's shape of a pipeline request: the options in "parameters"
sub hf {
    my ($req) = @_;
    my %top = (inputs => $req->{inputs});
    my %params = map { $_ => $req->{$_} } grep { $_ ne 'inputs' } keys %$req;
    return { %top, parameters => \%params };
}

# /embed and /embed_all requests at once on one model: each batch runs one
# kind of pass, and every client gets its own answer
add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeat_idx) = @_;
    my $n = $block->mixed or return;
    my $name = $block->name;
    my @reqs;
    for my $i (0 .. $n - 1) {
        my $c = $MINILM[$i % @MINILM];
        push @reqs, $i % 3 == 0
            ? aiserve_request({ uri => '/embed_all', headers =>
                  [ 'Content-Type' => 'application/json' ],
                  body => $json->encode({ inputs => $HIDDEN[1]{request}{inputs} }) })
            : aiserve_request({ uri => '/embed', headers =>
                  [ 'Content-Type' => 'application/json' ],
                  body => $json->encode({ inputs => $c->{text} }) });
    }
    my @res = aiserve_http_concurrent(server_port(), \@reqs, $n,
                                      timeout => 60);
    my @bad;
    for my $i (0 .. $n - 1) {
        my $got = eval { $json->decode($res[$i]{body}) };
        my $want = $i % 3 == 0 ? $HIDDEN[1]{response}
                               : [ $MINILM[$i % @MINILM]{embedding} ];
        push @bad, $i if ($res[$i]{status} // 0) != 200
                         || approx_diff($got, $want, 1e-4) ne '';
    }
    Test::More::is(scalar @bad, 0,
                   "$name - $n clients, each its own correct answer")
        or Test::More::diag(Test::More::explain([ @res[@bad] ]));
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: /decode equals tokenizers' decode (skip_special_tokens, batches)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /decode { aiserve_infer minilm api=decode; }
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/decode", @main::DECODE)
--- json_approx eval
main::answers(@main::DECODE)
--- no_error_log
[error]



=== TEST 2: /decode refuses what it cannot decode
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /decode { aiserve_infer minilm api=decode; }
--- more_headers
Content-Type: application/json
--- request eval
["POST /decode\n{\"ids\": [[101, 7592], [101, 30522]]}",
 "POST /decode\n{\"ids\": \"hello\"}",
 "POST /decode\n{\"ids\": [], \"skip_special_tokens\": true}",
 "POST /decode\n{\"ids\": [101], \"clean_up_tokenization_spaces\": false}",
 "POST /decode\n{\"ids\": [[]]}",
 "POST /decode\n{\"ids\": [[101], []]}"]
--- error_code eval
[422, 422, 422, 422, 422, 422]
--- json_approx eval
[main::err("invalid_request_error", "invalid_token", "ids[1][1]",
           "ids[1][1] must be a token id from 0 to 30521"),
 main::err("invalid_request_error", "invalid_type", "ids",
           "ids must be an array of token ids or an array of such arrays"),
 main::err("invalid_request_error", "empty_input", "ids",
           "ids must not be empty"),
 main::err("invalid_request_error", "unknown_field",
           "clean_up_tokenization_spaces",
           "clean_up_tokenization_spaces is not a field of this route, "
           . "which reads ids, skip_special_tokens, model, parameters and "
           . "options"),
 main::err("invalid_request_error", "empty_input", "ids[0]",
           "ids[0] must not be empty"),
 main::err("invalid_request_error", "empty_input", "ids[1]",
           "ids[1] must not be empty")]
--- no_error_log
[error]



=== TEST 3: /similarity and POST / (api=tei) answer sentence-transformers' cos_sim
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /similarity { aiserve_infer minilm api=similarity; }
location = / { aiserve_infer minilm api=tei; }
--- more_headers
Content-Type: application/json
--- request eval
[ AiserveApprox::json_request("POST /similarity", $main::SIMILARITY[0]{request}),
  AiserveApprox::json_request("POST /",
      { %{ $main::SIMILARITY[0]{request} }, parameters => {} }),
  AiserveApprox::json_request("POST /",
      { %{ $main::SIMILARITY[0]{request} },
        parameters => { truncate => JSON::PP::true,
                        truncation_direction => "Left" } }) ]
--- json_approx eval
[ $main::SIMILARITY[0]{response}, $main::SIMILARITY[0]{response},
  $main::SIMILARITY[0]{response} ]
--- no_error_log
[error]



=== TEST 4: /similarity validation
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /similarity { aiserve_infer minilm api=similarity; }
--- more_headers
Content-Type: application/json
--- request eval
["POST /similarity\n{\"inputs\": {\"source_sentence\": \"a\", \"sentences\": []}}",
 "POST /similarity\n{\"inputs\": {\"sentences\": [\"b\"]}}",
 "POST /similarity\n{\"inputs\": \"a\"}",
 "POST /similarity\n{\"inputs\": {\"source_sentence\": \"a\", \"sentences\": [\"b\", 3]}}",
 "POST /similarity\n{\"inputs\": {\"source_sentence\": \"a\", \"sentences\": [\"b\"]}, \"parameters\": {\"prompt_name\": \"query\"}}",
 "POST /similarity\n{\"inputs\": {\"source_sentence\": \"a\", \"sentences\": [\"b\"], \"normalize\": false}}"]
--- error_code eval
[422, 422, 422, 422, 422, 422]
--- json_approx eval
[main::err("invalid_request_error", "empty_input", "inputs.sentences",
           "inputs.sentences must not be empty"),
 main::err("invalid_request_error", "missing_field", "inputs.source_sentence",
           "inputs.source_sentence is required"),
 main::err("invalid_request_error", "invalid_type", "inputs",
           "inputs must be an object {\"source_sentence\", \"sentences\"}"),
 main::err("invalid_request_error", "invalid_type", "inputs.sentences[1]",
           "inputs.sentences[1] must be a string"),
 main::err("invalid_request_error", "unknown_field", "prompt_name",
           "prompt_name is not a field of this route, which reads inputs, "
           . "truncate, truncation_direction, model, parameters and options"),
 main::err("invalid_request_error", "unknown_field", "inputs.normalize",
           "inputs.normalize is not a field of inputs, which holds "
           . "source_sentence and sentences")]
--- no_error_log
[error]



=== TEST 5: /embed_all equals transformers' last_hidden_state (tiny model, batch)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model tiny $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /embed_all { aiserve_infer tiny api=embed_all; }
location = /minilm/embed_all { aiserve_infer minilm api=embed_all; }
--- more_headers
Content-Type: application/json
--- request eval
[ AiserveApprox::json_request("POST /embed_all", $main::HIDDEN[0]{request}),
  AiserveApprox::json_request("POST /minilm/embed_all", $main::HIDDEN[1]{request}) ]
--- json_approx eval
[ $main::HIDDEN[0]{response}, $main::HIDDEN[1]{response} ]
--- json_tolerance: 2e-4
--- no_error_log
[error]



=== TEST 6: /embed and /embed_all at once on one model: batches of one kind each
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /embed { aiserve_infer minilm api=embed; }
location = /embed_all { aiserve_infer minilm api=embed_all; }
--- more_headers
Content-Type: application/json
--- request
POST /embed
{"inputs": "warm up"}
--- response_body_like: ^\[\[
--- mixed: 24
--- timeout: 60
--- no_error_log
[error]



=== TEST 7: /tokenize returns every token (no cut at max_seq), add_special_tokens
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /tokenize { aiserve_infer minilm api=tokenize; }
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/tokenize", @main::TOKENIZE)
--- json_approx eval
main::answers(@main::TOKENIZE)
--- no_error_log
[error]



=== TEST 8: text_classification with "parameters": Hugging Face's Inference API shape
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
location = / { aiserve_infer cls api=tei; }
--- more_headers
Content-Type: application/json
--- request eval
[ @{ main::requests("/predict", @main::HF_CLASSIFY) },
  @{ main::requests("/", @main::HF_CLASSIFY) } ]
--- json_approx eval
[ @{ main::answers(@main::HF_CLASSIFY) }, @{ main::answers(@main::HF_CLASSIFY) } ]
--- no_error_log
[error]



=== TEST 9: token_classification with "parameters", on /ner and POST / (api=tei)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
--- config
location = /ner { aiserve_infer ner; }
location = / { aiserve_infer ner api=tei; }
--- more_headers
Content-Type: application/json
--- request eval
[ map { AiserveApprox::json_request("POST $_->[0]", main::hf($_->[1]{request})) }
  map { my $c = $_; (["/ner", $c], ["/", $c]) }
  grep { !ref $_->{request}{inputs} } @main::NER ]
--- json_approx eval
[ map { ($_->{response}) x 2 } grep { !ref $_->{request}{inputs} } @main::NER ]
--- no_error_log
[error]



=== TEST 10: POST / (api=tei) on an embedding model is TEI's /embed
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = / { aiserve_infer minilm api=tei; }
--- more_headers
Content-Type: application/json
--- request eval
[ map { AiserveApprox::json_request("POST /", { inputs => $_->{text} }) }
  @main::MINILM[0 .. 3] ]
--- json_approx eval
[ map { [ $_->{embedding} ] } @main::MINILM[0 .. 3] ]
--- no_error_log
[error]



=== TEST 10a: PUT / (api=tei) is a 405 allowing GET, HEAD and POST
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = / { aiserve_infer minilm api=tei; }
--- request
PUT /
--- error_code: 405
--- response_headers
Allow: GET, HEAD, POST
--- response_body_like: ^\{"error":\{"message":"method PUT is not allowed, use GET, HEAD or POST","type":"invalid_request_error","param":null,"code":"method_not_allowed"\}\}$
--- no_error_log
[error]



=== TEST 11: the Inference API's "options" change nothing (langchain's HuggingFaceInferenceAPIEmbeddings)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /embed { aiserve_infer minilm api=embed; }
--- more_headers
Content-Type: application/json
--- request eval
[ AiserveApprox::json_request("POST /embed",
      { inputs => [ $main::MINILM[0]{text} ],
        options => { wait_for_model => JSON::PP::true,
                     use_cache => JSON::PP::true } }) ]
--- json_approx eval
[ [ $main::MINILM[0]{embedding} ] ]
--- no_error_log
[error]



=== TEST 12: a field in "parameters" and at the top level; parameters not an object; raw_scores with a function; parameters null is absent
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: application/json
--- request eval
["POST /predict\n{\"inputs\": \"x\", \"top_k\": 1, \"parameters\": {\"top_k\": 2}}",
 "POST /predict\n{\"inputs\": \"x\", \"parameters\": [1]}",
 "POST /predict\n{\"inputs\": \"x\", \"raw_scores\": true, \"function_to_apply\": \"softmax\"}",
 "POST /predict\n{\"inputs\": \"x\", \"parameters\": null}",
 "POST /predict\n{\"inputs\": \"x\"}"]
--- error_code eval
[422, 422, 422, 200, 200]
--- response_body_like eval
[qr/^\{"error":\{"message":"top_k is given both at the top level and in parameters","type":"invalid_request_error","param":"parameters.top_k","code":"invalid_value"\}\}$/,
 qr/^\{"error":\{"message":"parameters must be an object","type":"invalid_request_error","param":"parameters","code":"invalid_type"\}\}$/,
 qr/^\{"error":\{"message":"raw_scores: true asks for the scores without a function, function_to_apply names one: send one of the two","type":"invalid_request_error","param":"function_to_apply","code":"invalid_value"\}\}$/,
 qr/^\[\{"label":"(positive|negative)","score":[0-9.e-]+\}\]$/,
 qr/^\[\{"label":"(positive|negative)","score":[0-9.e-]+\}\]$/]
--- no_error_log
[error]



=== TEST 13: fields a route does not know are a 422 naming them; openai ignores them
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
--- config
location = /embed { aiserve_infer minilm api=embed; }
location = /ner { aiserve_infer ner; }
location = /v1/embeddings { aiserve_infer minilm; }
--- more_headers
Content-Type: application/json
--- request eval
["POST /embed\n{\"inputs\": \"x\", \"prompt_name\": \"query\"}",
 "POST /ner\n{\"inputs\": \"x\", \"parameters\": {\"stride\": 16}}",
 AiserveApprox::json_request("POST /v1/embeddings",
     { input => $main::MINILM[0]{text}, user => "u1", extra => 1 })]
--- error_code eval
[422, 422, 200]
--- json_approx eval
[main::err("invalid_request_error", "unknown_field", "prompt_name",
           "prompt_name is not a field of this route, which reads inputs, "
           . "normalize, truncate, truncation_direction, dimensions, model, "
           . "parameters and options"),
 main::err("invalid_request_error", "unknown_field", "stride",
           "stride is not a field of this route, which reads inputs, "
           . "aggregation_strategy, ignore_labels, truncate, model, "
           . "parameters and options"),
 main::openai($main::MINILM[0])]
--- no_error_log
[error]



=== TEST 14: "model" naming another model is 404 model_not_found; the answer names the model that served
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings { aiserve_infer minilm; }
location = /embed { aiserve_infer minilm api=embed; }
--- more_headers
Content-Type: application/json
--- request eval
["POST /v1/embeddings\n{\"input\": \"x\", \"model\": \"text-embedding-ada-002\"}",
 "POST /embed\n{\"inputs\": \"x\", \"model\": \"bge\"}",
 AiserveApprox::json_request("POST /v1/embeddings",
     { input => $main::MINILM[1]{text}, model => "minilm" }),
 AiserveApprox::json_request("POST /v1/embeddings",
     { input => $main::MINILM[2]{text} })]
--- error_code eval
[404, 404, 200, 200]
--- json_approx eval
[main::err("invalid_request_error", "model_not_found", "model",
           "the model \"text-embedding-ada-002\" is not served here; this "
           . "location serves \"minilm\""),
 main::err("invalid_request_error", "model_not_found", "model",
           "the model \"bge\" is not served here; this location serves "
           . "\"minilm\""),
 main::openai($main::MINILM[1]), main::openai($main::MINILM[2])]
--- no_error_log
[error]



=== TEST 15: api=similarity needs an embedding model
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /similarity { aiserve_infer cls api=similarity; }
--- must_die
--- error_log
"aiserve_infer" api=similarity does not fit model "cls" (task=classify)
