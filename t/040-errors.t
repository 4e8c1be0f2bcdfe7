# Every error status of an aiserve location, as the JSON error object
# {"error": {"message", "type", "param", "code"}}: 400 bad JSON, 405, 413
# (nginx's own client_max_body_size answer, rewritten), 415, 422 validation
# naming the field and index, 422 too many tokens naming the limit, invalid
# UTF-8, too many inputs, too many tokens per request; and what stays
# nginx's own HTML (errors before a location is chosen).

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;

add_response_body_check(\&AiserveApprox::check);

sub err {
    my ($message, $code, $param) = @_;
    return { error => { message => $message, type => 'invalid_request_error',
                        code => $code, param => $param } };
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: 405 for methods other than POST, with Allow
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- request eval
["GET /predict", "PUT /predict\n{}"]
--- error_code eval
[405, 405]
--- response_headers eval
[ "Allow: POST\nContent-Type: application/json",
  "Allow: POST\nContent-Type: application/json" ]
--- json_approx eval
[ main::err("method GET is not allowed, use POST", "method_not_allowed", undef),
  main::err("method PUT is not allowed, use POST", "method_not_allowed", undef) ]
--- no_error_log
[error]



=== TEST 2: 415 without a JSON content type
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- request eval
["POST /predict\n{\"inputs\": \"x\"}", "POST /predict\n{\"inputs\": \"x\"}",
 "POST /predict\n{\"inputs\": \"x\"}"]
--- more_headers eval
["Content-Type: application/x-www-form-urlencoded", "X-Nothing: 1",
 "Content-Type: application/jsonp"]
--- error_code eval
[415, 415, 415]
--- json_approx eval
[ (main::err("Content-Type must be application/json",
             "unsupported_media_type", undef)) x 3 ]
--- no_error_log
[error]



=== TEST 3: application/json with a charset is accepted
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: Application/JSON; charset=utf-8
--- request
POST /predict
{"inputs": "paris", "top_k": 0}
--- response_body
[]
--- no_error_log
[error]



=== TEST 4: 400 for a body that is not JSON or not an object
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: application/json
--- request eval
["POST /predict\n{\"inputs\": ", "POST /predict\n[1, 2]", "POST /predict\n"]
--- error_code eval
[400, 400, 400]
--- response_body_like eval
[ qr/^\{"error":\{"message":"invalid JSON body: [^"]+ at line 1, column \d+","type":"invalid_request_error","param":null,"code":"invalid_json"\}\}$/,
  qr/"message":"the JSON body must be an object"/,
  qr/^\{"error":\{"message":"empty request body, expected a JSON object","type":"invalid_request_error","param":null,"code":"invalid_json"\}\}$/ ]
--- no_error_log
[error]



=== TEST 5: 413 from client_max_body_size is JSON too
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict {
    client_max_body_size 100;
    aiserve_infer cls;
}
--- more_headers
Content-Type: application/json
--- request eval
"POST /predict\n{\"inputs\": \"" . ("a " x 100) . "\"}"
--- error_code: 413
--- response_headers
Content-Type: application/json
--- json_approx eval
[ main::err("the request body is larger than client_max_body_size",
            "request_too_large", undef) ]
--- error_log
client intended to send too large body



=== TEST 6: 422 names the field and the index
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings { aiserve_infer minilm; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /v1/embeddings\n{}",
  "POST /v1/embeddings\n{\"input\": [\"ok\", 3]}",
  "POST /v1/embeddings\n{\"input\": [\"ok\", \"\"]}",
  "POST /v1/embeddings\n{\"input\": []}",
  "POST /v1/embeddings\n{\"input\": {\"a\": 1}}",
  "POST /v1/embeddings\n{\"input\": [[101, 99999999]]}",
  "POST /v1/embeddings\n{\"input\": [101, -1]}",
  "POST /v1/embeddings\n{\"input\": \"x\", \"encoding_format\": \"int8\"}",
  "POST /v1/embeddings\n{\"input\": \"x\", \"dimensions\": 385}",
  "POST /v1/embeddings\n{\"input\": \"x\", \"model\": 7}" ]
--- error_code eval
[ (422) x 10 ]
--- json_approx eval
[ main::err("input is required", "missing_field", "input"),
  main::err("input[1] must be a string", "invalid_type", "input[1]"),
  main::err("input[1] must not be empty", "empty_input", "input[1]"),
  main::err("input must not be empty", "empty_input", "input"),
  main::err("input must be a string, an array of strings or of token ids",
            "invalid_type", "input"),
  main::err("input[0][1] must be a token id from 0 to 30521",
            "invalid_token", "input[0][1]"),
  main::err("input[1] must be a token id from 0 to 30521",
            "invalid_token", "input[1]"),
  main::err("encoding_format must be \"float\" or \"base64\"",
            "invalid_value", "encoding_format"),
  main::err("dimensions must be an integer from 1 to 384",
            "invalid_value", "dimensions"),
  main::err("model must be a string", "invalid_type", "model") ]
--- no_error_log
[error]



=== TEST 7: invalid UTF-8 names the field and index; nothing crashes
A byte that cannot continue a sequence, a sequence cut short before
another one, lead bytes of five-byte forms, overlong forms and code points
above U+10FFFF are each invalid UTF-8 (RFC 3629), not invalid JSON.
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /embed { aiserve_infer minilm api=embed; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /embed\n{\"inputs\": [\"fine\", \"ab\xff\xfecd\"]}",
  "POST /embed\n{\"inputs\": \"\xed\xa0\x80 surrogate\"}",
  "POST /embed\n{\"inputs\": \"ok\", \"\xc3\": 1}",
  "POST /embed\n{\"inputs\": \"nul \\u0000 inside\"}",
  "POST /embed\n{\"inputs\": [\"fine\", \"x\xc3\xc3y\"]}",
  "POST /embed\n{\"inputs\": \"cut \xe2\x98\xc3\xa9t\xc3\xa9\"}",
  "POST /embed\n{\"inputs\": \"\xf8\x90\x80\x80\x80 five bytes\"}",
  "POST /embed\n{\"inputs\": \"overlong \xc0\xaf \xe0\x80\xaf\"}",
  "POST /embed\n{\"inputs\": \"\xf4\x90\x80\x80 above U+10FFFF\"}" ]
--- error_code eval
[422, 422, 422, 200, 422, 422, 422, 422, 422]
--- response_body_like eval
[ qr/^\{"error":\{"message":"inputs\[1\] is not valid UTF-8 \(byte 2\)","type":"invalid_request_error","param":"inputs\[1\]","code":"invalid_utf8"\}\}$/,
  qr/"message":"inputs is not valid UTF-8 \(byte 0\)"/,
  qr/^\{"error":\{"message":"a field name is not valid UTF-8 \(byte 0\)","type":"invalid_request_error","param":null,"code":"invalid_utf8"\}\}$/,
  qr/^\[\[[-0-9.e,]+\]\]$/,
  qr/^\{"error":\{"message":"inputs\[1\] is not valid UTF-8 \(byte 1\)","type":"invalid_request_error","param":"inputs\[1\]","code":"invalid_utf8"\}\}$/,
  qr/"message":"inputs is not valid UTF-8 \(byte 4\)"/,
  qr/"message":"inputs is not valid UTF-8 \(byte 0\)"/,
  qr/"message":"inputs is not valid UTF-8 \(byte 9\)"/,
  qr/"message":"inputs is not valid UTF-8 \(byte 0\)"/ ]
--- no_error_log
[error]



=== TEST 8: too many tokens with truncation off names the limit; truncation on answers
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 max_seq=16;
--- config
location = /v1/embeddings { aiserve_infer minilm; }
location = /embed { aiserve_infer minilm api=embed; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /v1/embeddings\n{\"input\": [\"short\", \"" . ("word " x 20) . "\"]}",
  "POST /embed\n{\"inputs\": \"" . ("word " x 20) . "\"}",
  "POST /embed\n{\"inputs\": \"" . ("word " x 20) . "\", \"truncate\": true}",
  "POST /v1/embeddings\n{\"input\": [" . CORE::join(",", (1000) x 17) . "]}" ]
--- error_code eval
[422, 422, 200, 422]
--- response_body_like eval
[ qr/"message":"input\[1\] has 22 tokens, more than the limit of 16 tokens of model \\"minilm\\"; shorten it \(an OpenAI embeddings request has no field for truncation; truncate=on on \\"aiserve_model\\" makes the server truncate\)","type":"invalid_request_error","param":"input\[1\]","code":"too_many_tokens"/,
  qr/"message":"inputs has 22 tokens, more than the limit of 16 tokens of model \\"minilm\\"; shorten it or send \\"truncate\\": true"/,
  qr/^\[\[[-0-9.e,]+\]\]$/,
  qr/"message":"input has 17 tokens, more than the limit of 16 tokens of model \\"minilm\\"; shorten it \(an OpenAI embeddings request has no field for truncation;.*"code":"too_many_tokens"/ ]
--- no_error_log
[error]



=== TEST 8b: a too long sentence pair names the part that is too long (rerank: the query or the text)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model rr $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression task=rerank max_seq=16;
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls max_seq=16;
--- config
location = /rerank { aiserve_infer rr; }
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /rerank\n{\"query\": \"" . ("paris " x 14) . "\", \"texts\": [\"a\"]}",
  "POST /rerank\n{\"query\": \"paris\", \"texts\": [\"a\", \"" . ("paris " x 14) . "\"]}",
  "POST /rerank\n{\"query\": \"" . ("paris " x 14) . "\", \"texts\": [\"a\"], \"truncate\": true}",
  "POST /predict\n{\"inputs\": {\"text\": \"" . ("paris " x 14) . "\", \"text_pair\": \"a\"}}",
  "POST /predict\n{\"inputs\": [{\"text\": \"paris\", \"text_pair\": \"" . ("paris " x 14) . "\"}]}" ]
--- error_code eval
[422, 422, 200, 422, 422]
--- response_body_like eval
[ qr/^\{"error":\{"message":"query has 16 tokens with \[CLS\] and \[SEP\], which leaves no room for texts\[0\] within the limit of 16 tokens of model \\"rr\\"; shorten it or send \\"truncate\\": true","type":"invalid_request_error","param":"query","code":"too_many_tokens"\}\}$/,
  qr/^\{"error":\{"message":"query and texts\[1\] have 18 tokens together \(3 and 15, special tokens included\), more than the limit of 16 tokens of model \\"rr\\"; shorten it or send \\"truncate\\": true","type":"invalid_request_error","param":"texts\[1\]","code":"too_many_tokens"\}\}$/,
  qr/^\[\{"index":0,"score":[-0-9.e]+\}\]$/,
  qr/"message":"inputs.text has 16 tokens with \[CLS\] and \[SEP\], which leaves no room for inputs.text_pair within the limit of 16 tokens of model \\"cls\\"; shorten it or send \\"truncate\\": true","type":"invalid_request_error","param":"inputs.text"/,
  qr/"param":"inputs\[0\].text_pair","code":"too_many_tokens"/ ]
--- no_error_log
[error]



=== TEST 8c: a body that stops arriving: nginx closes the connection after client_body_timeout (before the client's 5 s), with no response
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; client_body_timeout 1s; }
--- raw_request eval
"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"inputs\": "
--- timeout: 5
--- error_code_like: ^$
--- response_body:
--- no_error_log
[error]



=== TEST 8d: token ids that are not a sequence of the model's tokenizer (tiktoken's, as LangChain's OpenAIEmbeddings sends them) are a 422
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
# [9906, 1917]: "Hello world" in tiktoken's cl100k_base
[ "POST /v1/embeddings\n{\"input\": [[9906, 1917]]}",
  "POST /v1/embeddings\n{\"input\": [[101, 7592, 2088, 102], [101, 7592, 2088]]}",
  "POST /embed\n{\"inputs\": [7592, 2088, 102]}",
  "POST /v1/embeddings\n{\"input\": [101, 7592, 2088, 102]}" ]
--- error_code eval
[422, 422, 422, 200]
--- response_body_like eval
[ qr/^\{"error":\{"message":"input\[0\] is not a token sequence of model \\"minilm\\": it must start with \[CLS\] \(101\) and end with \[SEP\] \(102\), as \/tokenize returns it; send text instead of ids made by another tokenizer \(tiktoken's, as LangChain's OpenAIEmbeddings sends unless check_embedding_ctx_length=False\)","type":"invalid_request_error","param":"input\[0\]","code":"invalid_token_sequence"\}\}$/,
  qr/"param":"input\[1\]","code":"invalid_token_sequence"/,
  qr/"param":"inputs","code":"invalid_token_sequence"/,
  qr/"object":"list"/ ]
--- no_error_log
[error]



=== TEST 9: aiserve_max_inputs
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_model rr $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression task=rerank;
--- config
aiserve_max_inputs 2;
location = /predict { aiserve_infer cls; }
location = /rerank { aiserve_infer rr; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /predict\n{\"inputs\": [\"a\", \"b\", \"c\"]}",
  "POST /predict\n{\"inputs\": [\"a\", \"b\"]}",
  "POST /rerank\n{\"query\": \"q\", \"texts\": [\"a\", \"b\", \"c\"]}" ]
--- error_code eval
[422, 200, 422]
--- response_body_like eval
[ qr/"message":"inputs has 3 items, more than the limit of 2 \(aiserve_max_inputs\)".*"code":"too_many_inputs"/,
  qr/^\[\{"label":"\w+","score":[0-9.e-]+\},\{"label":"\w+","score":[0-9.e-]+\}\]$/,
  qr/"message":"texts has 3 items, more than the limit of 2/ ]
--- no_error_log
[error]



=== TEST 10: predict, rerank and NER validation
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_model rr $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression task=rerank;
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
--- config
location = /predict { aiserve_infer cls; }
location = /rerank { aiserve_infer rr; }
location = /ner { aiserve_infer ner; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /predict\n{\"inputs\": \"a\", \"top_k\": -1}",
  "POST /predict\n{\"inputs\": \"a\", \"function_to_apply\": \"relu\"}",
  "POST /predict\n{\"inputs\": [{\"text\": \"a\", \"text_pair\": 5}]}",
  "POST /predict\n{\"inputs\": \"a\", \"truncate\": \"yes\"}",
  "POST /rerank\n{\"texts\": [\"a\"]}",
  "POST /rerank\n{\"query\": \"q\", \"texts\": \"a\"}",
  "POST /rerank\n{\"query\": \"q\", \"texts\": [\"a\", null]}",
  "POST /ner\n{\"inputs\": \"a\", \"aggregation_strategy\": \"longest\"}",
  "POST /ner\n{\"inputs\": \"a\", \"ignore_labels\": [\"O\", 1]}",
  "POST /predict\n{\"inputs\": {\"text_pair\": \"a\"}}",
  "POST /predict\n{\"inputs\": [{\"text\": \"a\"}, {\"text\": null, \"text_pair\": \"b\"}]}" ]
--- error_code eval
[ (422) x 11 ]
--- json_approx eval
[ main::err("top_k must be null or an integer >= 0", "invalid_value", "top_k"),
  main::err("function_to_apply must be \"sigmoid\", \"softmax\" or \"none\"",
            "invalid_value", "function_to_apply"),
  main::err("inputs[0].text_pair must be a string", "invalid_type",
            "inputs[0].text_pair"),
  main::err("truncate must be true or false", "invalid_type", "truncate"),
  main::err("query is required", "missing_field", "query"),
  main::err("texts must be an array of strings", "invalid_type", "texts"),
  main::err("texts[1] must be a string", "invalid_type", "texts[1]"),
  main::err("aggregation_strategy must be one of none, simple, first, average, max",
            "invalid_value", "aggregation_strategy"),
  main::err("ignore_labels[1] must be a string", "invalid_type",
            "ignore_labels[1]"),
  main::err("inputs.text is required", "missing_field", "inputs.text"),
  main::err("inputs[1].text is required", "missing_field", "inputs[1].text") ]
--- no_error_log
[error]



=== TEST 11: a 400 that quotes a body with broken UTF-8 is still valid UTF-8 JSON
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /predict\n{\"texts\": [\"b\"], \"return tex\xcb\": true, \"raw_scores\": \"\\ud\xa4ff\"}",
  "POST /predict\n{\"inputs\": \"\xe2\x98\" }" ]
--- error_code eval
[400, 422]
--- response_body_filters eval
sub {
    my $s = $_[0];
    return "not UTF-8: $_[0]" unless utf8::decode($s);
    my $e = JSON::PP->new->decode($s);
    return "$e->{error}{code}\n";
}
--- response_body eval
["invalid_json\n", "invalid_utf8\n"]
--- no_error_log
[error]



=== TEST 12: TEI truncation_direction: Left keeps the end of the text
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 max_seq=16;
--- config
location = /embed { aiserve_infer minilm api=embed; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /embed\n{\"inputs\": [\"alpha " . ("word " x 20) . "\", \"" . ("word " x 14)
  . "\"], \"truncate\": true, \"truncation_direction\": \"Left\"}",
  "POST /embed\n{\"inputs\": [\"alpha " . ("word " x 20) . "\", \"" . ("word " x 14)
  . "\"], \"truncate\": true, \"truncation_direction\": \"Right\"}",
  "POST /embed\n{\"inputs\": \"x\", \"truncation_direction\": \"Up\"}" ]
--- error_code eval
[200, 200, 422]
--- response_body_filters eval
sub {
    my $r = JSON::PP->new->decode($_[0]);
    return $r->{error}{message} . "\n" if ref $r eq 'HASH';
    my $d = AiserveApprox::approx_diff($r->[0], $r->[1], 1e-5);
    return $d eq '' ? "same\n" : "different\n";
}
--- response_body eval
[ "same\n", "different\n",
  "truncation_direction must be \"Right\" or \"Left\"\n" ]
--- no_error_log
[error]



=== TEST 13: aiserve_max_request_tokens bounds the tokens of a whole request, before the queue
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
aiserve_model rr $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-regression task=rerank;
--- config
location = /v1/embeddings { aiserve_infer minilm; aiserve_max_request_tokens 10; }
location = /tokenize { aiserve_infer minilm api=tokenize; aiserve_max_request_tokens 10; }
location = /rerank { aiserve_infer rr; aiserve_max_request_tokens 10; }
location = /default {
    client_max_body_size 1m;
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /v1/embeddings\n{\"input\": [\"a b c\", \"d e f g\"]}",
  "POST /v1/embeddings\n{\"input\": [[101, 1037, 102], [101, 1037, 1038, 1039, 1040, 102], [101, 102]]}",
  "POST /tokenize\n{\"inputs\": \"a b c d e f g h i\"}",
  "POST /rerank\n{\"query\": \"q q\", \"texts\": [\"a\", \"b\"]}",
  "POST /default\n{\"input\": [" . CORE::join(",", ("\"" . ("a " x 200) . "\"") x 2048) . "]}" ]
--- error_code eval
[422, 422, 422, 422, 422]
--- response_body_like eval
[ qr/\{"error":\{"message":"the request has 11 tokens, more than the limit of 10 tokens per request \(aiserve_max_request_tokens\): split the inputs over several requests, or raise aiserve_max_request_tokens","type":"invalid_request_error","param":"input","code":"too_many_tokens"\}\}/,
  qr/"message":"the request has 11 tokens, more than the limit of 10 tokens per request.*"param":"input","code":"too_many_tokens"/,
  qr/"message":"the request has 11 tokens, more than the limit of 10 .*"param":"inputs","code":"too_many_tokens"/,
  qr/"message":"the request has 12 tokens, more than the limit of 10 .*"param":"texts","code":"too_many_tokens"/,
  qr/"message":"the request has 413696 tokens, more than the limit of 65536 tokens per request \(aiserve_max_request_tokens\): split the inputs over several requests, or raise aiserve_max_request_tokens"/ ]
--- no_error_log
[error]
aiserve enqueue



=== TEST 14: a request of exactly aiserve_max_request_tokens tokens is served
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
aiserve_max_request_tokens 10;
location = /v1/embeddings { aiserve_infer minilm; }
--- more_headers
Content-Type: application/json
--- request
POST /v1/embeddings
{"input": ["a b c", "d e f"]}
--- response_body_like: "prompt_tokens":10,
--- no_error_log
[error]



=== TEST 15: strings and token arrays mixed are none of the four shapes; token errors name the inner index
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
[ "POST /v1/embeddings\n{\"input\": [[101, 102], \"a\"]}",
  "POST /v1/embeddings\n{\"input\": [\"a\", \"b\", [101, 102]]}",
  "POST /embed\n{\"inputs\": [[101, 102], [101, 1037, 102], 5]}",
  "POST /v1/embeddings\n{\"input\": [1, \"a\"]}",
  "POST /v1/embeddings\n{\"input\": [[101, -5, 102]]}",
  "POST /embed\n{\"inputs\": [[101, 102], [101, 1037, 3.5, 102]]}" ]
--- error_code eval
[ (422) x 6 ]
--- json_approx eval
[ main::err("input[1] must be an array of token ids like input[0]: input "
            . "is a string, an array of strings, an array of token ids or "
            . "an array of such arrays", "invalid_type", "input[1]"),
  main::err("input[2] must be a string like input[0]: input is a string, "
            . "an array of strings, an array of token ids or an array of "
            . "such arrays", "invalid_type", "input[2]"),
  main::err("inputs[2] must be an array of token ids like inputs[0]: "
            . "inputs is a string, an array of strings, an array of token "
            . "ids or an array of such arrays", "invalid_type", "inputs[2]"),
  main::err("input[1] must be a token id from 0 to 30521",
            "invalid_token", "input[1]"),
  main::err("input[0][1] must be a token id from 0 to 30521",
            "invalid_token", "input[0][1]"),
  main::err("inputs[1][2] must be a token id from 0 to 30521",
            "invalid_token", "inputs[1][2]") ]
--- no_error_log
[error]



=== TEST 16: a body of whitespace only is an empty body too
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
--- config
location = /predict { aiserve_infer cls; }
--- raw_request eval
"POST /predict HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n \r\n\t"
--- error_code: 400
--- response_body_like: ^\{"error":\{"message":"empty request body, expected a JSON object","type":"invalid_request_error","param":null,"code":"invalid_json"\}\}$
--- no_error_log
[error]



=== TEST 17: 422 has its reason phrase (nginx 1.22 has none for it)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings { aiserve_infer minilm; }
--- more_headers
Content-Type: application/json
--- request
POST /v1/embeddings
{"input": ""}
--- error_code: 422
--- raw_response_headers_like: ^HTTP/1\.1 422 Unprocessable Entity\r\n
--- response_body_like: "code":"empty_input"
--- no_error_log
[error]



=== TEST 18: an error nginx sends before choosing the location is its own HTML page (as README says)
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /v1/embeddings { aiserve_infer minilm; }
--- raw_request eval
"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"input\": \"hi\"}"
--- error_code: 400
--- response_headers
Content-Type: text/html
--- response_body_like: <title>400 Bad Request</title>



=== TEST 19: a body read from the client body temporary file is the body
nginx writes a body larger than client_body_buffer_size, and with
client_body_in_file_only every body, to a temporary file: the handler
reads it from there (valid JSON, and invalid UTF-8 repaired as in TEST 7).
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
location = /small { client_body_buffer_size 16; aiserve_infer minilm api=tokenize; }
location = /file { client_body_in_file_only clean; aiserve_infer minilm api=tokenize; }
--- more_headers
Content-Type: application/json
--- request eval
[ "POST /small\n{\"inputs\": \"" . ("hello " x 40) . "world\"}",
  "POST /file\n{\"inputs\": \"hello world\"}",
  "POST /small\n{\"inputs\": \"" . ("hello " x 40) . "w\xc3\xc3\"}",
  "POST /file\n{\"inputs\": \"hello \xff\"}" ]
--- error_code eval
[200, 200, 422, 422]
--- response_body_like eval
[ qr/^\[\[\{"id":101,"text":"\[CLS\]"[^}]*\},(?:\{"id":7592,"text":"hello"[^}]*\},){40}\{"id":2088,"text":"world","special":false,"start":240,"stop":245\},\{"id":102,"text":"\[SEP\]"[^}]*\}\]\]$/,
  qr/^\[\[\{"id":101,"text":"\[CLS\]"[^}]*\},\{"id":7592,"text":"hello","special":false,"start":0,"stop":5\},\{"id":2088,"text":"world","special":false,"start":6,"stop":11\},\{"id":102,"text":"\[SEP\]"[^}]*\}\]\]$/,
  qr/"message":"inputs is not valid UTF-8 \(byte 241\)"/,
  qr/"message":"inputs is not valid UTF-8 \(byte 6\)"/ ]
--- no_error_log
[error]
