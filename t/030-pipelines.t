# Classification, NER and rerank answers equal what the Hugging Face
# pipelines return on the committed tiny models (t/data/pipeline-fixtures.json
# from tools/gen-pipeline-fixtures.py): text-classification with top_k and
# function_to_apply on single-label, multi-label and regression heads;
# token-classification with every aggregation_strategy; a one-label
# cross-encoder for /rerank.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;

add_response_body_check(\&AiserveApprox::check);

our @NER = fixture('ner');
our @CLS = fixture('classify');
our @RERANK = fixture('rerank');

sub requests {
    my ($uri, @cases) = @_;
    return [ map { AiserveApprox::json_request("POST $uri", $_->{request}) }
             @cases ];
}

sub answers { [ map { $_->{response} } @_ ] }

sub of_model { my $m = shift; grep { $_->{model} eq $m } @_ }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: NER, aggregation_strategy none and simple, single and batched inputs
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
--- config
location = /ner {
    aiserve_infer ner;
}
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/ner", grep { $_->{request}{aggregation_strategy} =~ /^(none|simple)$/ } @main::NER)
--- json_approx eval
main::answers(grep { $_->{request}{aggregation_strategy} =~ /^(none|simple)$/ } @main::NER)
--- no_error_log
[error]



=== TEST 2: NER, aggregation_strategy first, average and max (word aggregation)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner task=ner;
--- config
location = /ner {
    aiserve_infer ner api=ner;
}
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/ner", grep { $_->{request}{aggregation_strategy} =~ /^(first|average|max)$/ } @main::NER)
--- json_approx eval
main::answers(grep { $_->{request}{aggregation_strategy} =~ /^(first|average|max)$/ } @main::NER)
--- no_error_log
[error]



=== TEST 3: predict, single-label head: legacy shape, top_k, function_to_apply, pairs
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict {
    aiserve_infer cls;
}
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/predict", main::of_model("tiny-bert-seq-cls", @main::CLS))
--- json_approx eval
main::answers(main::of_model("tiny-bert-seq-cls", @main::CLS))
--- no_error_log
[error]



=== TEST 4: predict, multi-label head (sigmoid by default)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model multi $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-multilabel task=classify;
--- config
location = /predict {
    aiserve_infer multi api=predict;
}
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/predict", main::of_model("tiny-bert-seq-multilabel", @main::CLS))
--- json_approx eval
main::answers(main::of_model("tiny-bert-seq-multilabel", @main::CLS))
--- no_error_log
[error]



=== TEST 5: predict, regression head (no function by default)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model reg $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression;
--- config
location = /predict {
    aiserve_infer reg;
}
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/predict", main::of_model("tiny-bert-seq-regression", @main::CLS))
--- json_approx eval
main::answers(main::of_model("tiny-bert-seq-regression", @main::CLS))
--- no_error_log
[error]



=== TEST 6: rerank with a one-label cross-encoder: sorted, return_text, raw_scores
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model rr $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression task=rerank;
--- config
location = /rerank {
    aiserve_infer rr;
}
--- more_headers
Content-Type: application/json
--- request eval
main::requests("/rerank", @main::RERANK)
--- json_approx eval
main::answers(@main::RERANK)
--- no_error_log
[error]



=== TEST 7: several models in one server, each location its own
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_model rr $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression task=rerank;
--- config
location = /ner { aiserve_infer ner; }
location = /predict { aiserve_infer cls; }
location = /rerank { aiserve_infer rr; }
location = /tokenize { aiserve_infer cls api=tokenize; }
--- more_headers
Content-Type: application/json
--- request eval
[ @{ main::requests("/ner", $main::NER[0]) },
  @{ main::requests("/predict", (main::of_model("tiny-bert-seq-cls", @main::CLS))[0]) },
  @{ main::requests("/rerank", $main::RERANK[0]) },
  AiserveApprox::json_request("POST /tokenize", { inputs => "paris" }) ]
--- json_approx eval
[ @{ main::answers($main::NER[0],
                   (main::of_model("tiny-bert-seq-cls", @main::CLS))[0],
                   $main::RERANK[0]) },
  [ [ { id => 2, text => "[CLS]", special => JSON::PP::true, start => 0, stop => 0 },
      { id => 1010, text => "paris", special => JSON::PP::false, start => 0, stop => 5 },
      { id => 3, text => "[SEP]", special => JSON::PP::true, start => 0, stop => 0 } ] ] ]
--- no_error_log
[error]
