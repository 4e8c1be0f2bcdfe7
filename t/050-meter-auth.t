# aiserve_meter: API keys.  401 with WWW-Authenticate for a missing or
# unknown key, keys in the query string refused and masked in the logs, 403
# for a model the key may not use or a blocked key, CLI changes seen without
# a reload, $aiserve_key_id / $aiserve_cost, the aiserve_usage location and
# configuration errors.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_free_port);
use AiserveMeter qw(meter_dir meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_log_dir meter_json
                    meter_keys_in_logs);
use File::Path ();
use Time::HiRes ();

repeat_each(1);
no_shuffle();

my $db = meter_db('050');
my $logs = meter_log_dir();
my %key;
my %id;
($id{alice}, $key{alice}) = meter_create_key($db, '--name', 'alice',
                                             '--models', 'tiny');
($id{bob}, $key{bob}) = meter_create_key($db, '--name', 'bob');
($id{admin}, $key{admin}) = meter_create_key($db, '--name', 'ops',
                                             '--admin');
($id{blocked}, $key{blocked}) = meter_create_key($db, '--name', 'mallory');
meter_cli($db, 'block', $id{blocked});
($id{expired}, $key{expired}) = meter_create_key($db, '--name', 'old',
                                                 '--expires', '+1s');

# every aiserve-keys command answers --help
for my $cmd (qw(create list revoke block unblock set usage export)) {
    my ($rc, $out) = meter_cli($db, $cmd, '--help');
    ok($rc == 0 && $out =~ /^usage: aiserve-keys $cmd/,
       "aiserve-keys $cmd --help");
}
{
    my ($rc, $out) = meter_cli($db, 'list');
    like($out, qr/^key_\d+ +alice +ais_live_\w{4}\.\.\.\w{4} +active/m,
         'list shows id, name, prefix...last4, status');
    unlike($out, qr/ais_live_\w{38}/, 'list never shows a secret');
}

# aiserve-keys refuses what it cannot store faithfully
{
    my $bad = sub {
        my ($what, @args) = @_;
        my $cmd = join ' ', map { quotemeta }
                  ($ENV{TEST_NGINX_AISERVE_TOOLS}
                   // "$ENV{TEST_NGINX_AISERVE_ROOT}/tools") . '/aiserve-keys',
                  '--db', $db, @args;
        my $err = `$cmd 2>&1 >/dev/null`;
        my $rc = $? >> 8;
        ok($rc != 0, "aiserve-keys refuses $what") or diag($err);
        return $err;
    };
    my $n = () = meter_cli($db, 'list') =~ /^key_/mg;

    like($bad->('--type live2', 'create', '--type', 'live2'),
         qr/invalid type "live2" \(live or test\)/, 'type: names live|test');
    $bad->('--type prod', 'create', '--type', 'prod');
    like($bad->('a number past 2^64', 'create', '--tpm',
                '99999999999999999999999'),
         qr/invalid --tpm "99999999999999999999999"/, 'past 2^64: named');
    like($bad->('a limit over the maximum', 'create', '--tpm',
                '20000000000000000'),
         qr/--tpm 20000000000000000 is over the maximum of 100000000000000/,
         'over the maximum: the maximum named');
    $bad->('a negative number', 'create', '--rpm', '-1');
    $bad->('a number with a sign', 'create', '--rpm', '+5');
    $bad->('a number with blanks', 'create', '--rpm', ' 5');
    $bad->('--concurrency past 2^32', 'create', '--concurrency',
           '4294967297');
    like($bad->('--budget without --period', 'create', '--budget', '100'),
         qr/--budget needs --period day\|month/, 'budget: period required');
    like($bad->('an expiry in the past', 'create', '--expires', '2020-01-01'),
         qr/expiry "2020-01-01" is in the past/, 'past expiry: named');
    $bad->('an expiry of +0d', 'create', '--expires', '+0d');
    $bad->('an expiry past the year 9999', 'create', '--expires',
           '+99999999999999d');
    my $m = () = meter_cli($db, 'list') =~ /^key_/mg;
    is($m, $n, 'no key was created by the refused commands');

    $bad->('set: an expiry in the past', 'set', $id{bob}, '--expires',
           '1577836800');
    $bad->('set: --budget on a key without a period', 'set', $id{bob},
           '--budget', '100');
    $bad->('set: an expiry on no calendar day', 'set', $id{bob},
           '--expires', '2099-02-30');
    $bad->('export --to a day that does not exist', 'export', '--to',
           '2026-02-30');
    $bad->('usage --from with a sign', 'usage', '--from', '2026-12-+6');
    $bad->('a name with an escape', 'create', '--name', "a\e[2Jb");
    $bad->('an account name with a tab', 'account', 'create', '--name',
           "a\tb");
    $bad->('export --from with trailing characters', 'export', '--from',
           '2026-12-06x');
    my ($rc) = meter_cli($db, 'set', $id{bob}, '--tpm', '100000000000000');
    is($rc, 0, 'the maximum itself is accepted');
    meter_cli($db, 'set', $id{bob}, '--tpm', '0');

    my ($rc2, $out) = meter_cli($db, 'create', '--budget', '100',
                                '--period', 'day', '--type', 'test');
    is($rc2, 0, 'create --budget with --period, --type test');
    like($out, qr/^api_key: ais_test_/m, 'a test key');
}

# a ledger below directories that do not exist yet, for the CLI and for
# nginx (the README's /var/lib/aiserve/ledger on a fresh host)
my $fresh = meter_dir() . '/fresh-050';
File::Path::remove_tree($fresh);
{
    my ($rc, $out) = meter_cli("$fresh/cli/var/lib/aiserve/ledger", 'create',
                               '--name', 'fresh');
    is($rc, 0, 'aiserve-keys create makes the missing parent directories');
    is((stat "$fresh/cli/var/lib/aiserve/ledger")[2] & 0777, 0700,
       'the ledger directory is 0700');
}
$ENV{TEST_NGINX_METER_FRESH} = "$fresh/nginx/var/lib/aiserve/ledger";

our $key_for_query = $key{alice};
our $key_rest = substr($key{alice}, 9);

$ENV{TEST_NGINX_METER_DB} = $db;
$ENV{TEST_NGINX_H2_PORT} = aiserve_free_port();
$ENV{TEST_NGINX_METER_LOGS} = $logs;

# "Bearer $KEY{alice}" in --- more_headers becomes alice's secret.
add_block_preprocessor(sub {
    my $block = shift;
    my $h = $block->more_headers;
    if (defined $h) {
        $h =~ s/\$KEY\{(\w+)\}/$key{$1}/g;
        $block->set_value(more_headers => $h);
    }
    $block->set_value(main_config => <<"EOC") unless defined $block->main_config;
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    $block->set_value(http_config => <<"EOC") unless defined $block->http_config;
    log_format meter '\$remote_addr "\$request" \$status '
                     'key=\$aiserve_key_id cost=\$aiserve_cost';
    access_log $logs/access.log meter;
    access_log $logs/access-050.log meter;
    aiserve_model tiny $ENV{TEST_NGINX_AISERVE_ROOT}/models/tiny-st-cls;
    aiserve_model other $ENV{TEST_NGINX_AISERVE_ROOT}/models/tiny-st-max;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter 1m;
    aiserve_price tiny 1500;
    server {
        listen 127.0.0.1:$ENV{TEST_NGINX_H2_PORT} http2;
        location /v1/embeddings {
            aiserve_infer tiny api=openai;
            aiserve_meter on;
        }
    }
EOC
});

sub post {
    my ($who, %opt) = @_;
    my $secret = defined $who ? ($key{$who} // $who) : undef;
    return aiserve_http(server_port(),
                        meter_embed_request($secret, $opt{input} // 'hello',
                                            %opt));
}

my %checks = (
    # revoke and set through the CLI, seen by the running workers
    cli_changes => sub {
        my $r = post('bob');
        is($r->{status}, 200, 'bob is admitted');

        meter_cli($db, 'set', $id{bob}, '--models', 'other');
        $r = post('bob');
        is($r->{status}, 403, 'models changed by the CLI: 403 at once');
        meter_cli($db, 'set', $id{bob}, '--models', '');

        my ($rc) = meter_cli($db, 'revoke', $id{bob});
        is($rc, 0, 'aiserve-keys revoke');
        my $t0 = Time::HiRes::time();
        my $status;
        while (Time::HiRes::time() - $t0 < 1) {
            $status = post('bob')->{status};
            last if $status == 401;
            Time::HiRes::sleep(0.05);
        }
        is($status, 401, 'revoked key refused within 1 s, no reload');

        $r = post('blocked');
        is($r->{status}, 403, 'blocked key: 403');
        is(meter_json($r->{body})->{error}{code}, 'api_key_blocked',
           'blocked: code');
        meter_cli($db, 'unblock', $id{blocked});
        is(post('blocked')->{status}, 200, 'unblocked key admitted at once');
    },

    expired => sub {
        Time::HiRes::sleep(1.1);
        my $r = post('expired');
        is($r->{status}, 401, 'expired key: 401');
        like($r->{body}, qr/expired/, 'expired: message');
        my ($rc, $out) = meter_cli($db, 'list');
        like($out, qr/^\Q$id{expired}\E +old +\S+ +expired /m,
             'list shows the key as expired');
        ($rc, $out) = meter_cli($db, 'list', '--json');
        like($out, qr/"id":"\Q$id{expired}\E".*"status":"expired"/,
             'list --json too');
    },

    # $aiserve_key_id and $aiserve_cost in the access log, exact cost
    variables => sub {
        my $r = post('alice', input => 'one two three');
        is($r->{status}, 200, 'alice admitted');
        my $tokens = meter_json($r->{body})->{usage}{prompt_tokens};
        ok($tokens > 0, "usage.prompt_tokens = $tokens");
        Time::HiRes::sleep(0.05);
        open my $in, '<', "$logs/access-050.log" or die $!;
        my @lines = grep { /key=\Q$id{alice}\E / } <$in>;
        my $cost = $tokens * 1500 / 1000;
        my $want = sprintf '%d.%03d', int($cost), ($tokens * 1500) % 1000;
        like($lines[-1], qr/" 200 key=\Q$id{alice}\E cost=\Q$want\E$/,
             "access log: key id and cost $want");
    },

    # the caller's own usage; an admin key sees every key
    # a location without the meter: not refused, but masked all the same
    unmetered_query => sub {
        my $r = aiserve_http(server_port(), {
            uri => "/static?api_key=$key{bob}&x=1" });
        is($r->{status}, 200, 'unmetered location: not refused');
        is($r->{body}, "args=api_key=ais_live_" . substr($key{bob}, 9, 4)
                       . ('*' x 34) . "&x=1\n", '$args is masked');
        Time::HiRes::sleep(0.05);
        open my $in, '<', "$logs/access-050.log" or die $!;
        my @lines = grep { m{GET /static} } <$in>;
        like($lines[-1] // '',
             qr/"GET \/static\?api_key=ais_live_\w{4}\*{34}&x=1 HTTP/,
             'unmetered location: masked in the access log');

        $r = aiserve_http(server_port(), {
            uri => "/static?api_key=%2561is%5Flive_" . substr($key{bob}, 9)
                   . "Zx" });
        is($r->{body}, "args=api_key=%2561is%5Flive_" . substr($key{bob}, 9, 4)
                       . ('*' x 34) . "Zx\n",
           '$args is masked: encoded twice, glued to more characters');
    },

    # HTTP/2 builds the request line apart from the uri and args
    h2_query => sub {
        my $url = "http://127.0.0.1:$ENV{TEST_NGINX_H2_PORT}/v1/embeddings"
                  . "?api_key=$key{bob}";
        my $out = `curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}' '$url'`;
        is($out, '400 2', 'HTTP/2: key in the query string refused');
        Time::HiRes::sleep(0.05);
        open my $in, '<', "$logs/access-050.log" or die $!;
        my @lines = grep { /HTTP\/2\.0/ } <$in>;
        like($lines[-1] // '', qr/"GET \/v1\/embeddings\?api_key=ais_live_\w{4}\*{34} HTTP\/2\.0" 400/,
             'HTTP/2: masked in the access log');
    },

    fresh_ledger => sub {
        my $path = $ENV{TEST_NGINX_METER_FRESH};
        ok(-f "$path/data.mdb" && -f "$path/hmac.key",
           'nginx created the ledger and its parent directories');
        is((stat $path)[2] & 0777, 0700, 'the ledger directory is 0700');
    },

    usage => sub {
        post('alice') for 1 .. 3;
        my $r = aiserve_http(server_port(), {
            uri => '/usage',
            headers => [Authorization => "Bearer $key{alice}"] });
        is($r->{status}, 200, 'usage: 200');
        my $u = meter_json($r->{body});
        my @keys = map { $_->{key_id} } @{ $u->{data} };
        ok(@keys && !grep({ $_ ne $id{alice} } @keys),
           'alice sees only her own rows');
        my $req = 0;
        $req += $_->{requests} for @{ $u->{data} };
        ok($req >= 3, "alice's requests counted before any flush ($req)");

        $r = aiserve_http(server_port(), {
            uri => '/usage',
            headers => [Authorization => "Bearer $key{admin}"] });
        $u = meter_json($r->{body});
        my %seen = map { $_->{key_id} => 1 } @{ $u->{data} };
        ok($u->{admin} && $seen{ $id{alice} } && $seen{ $id{blocked} },
           'admin sees every key');

        $r = aiserve_http(server_port(), { uri => '/usage' });
        is($r->{status}, 401, 'usage without a key: 401');

        # another method: a JSON 405 with Allow, not nginx's HTML page
        $r = aiserve_http(server_port(), {
            method => 'POST', uri => '/usage', body => '{}',
            headers => [Authorization => "Bearer $key{alice}",
                        'Content-Type' => 'application/json'] });
        is($r->{status}, 405, 'POST /usage: 405');
        is($r->{headers}{allow}, 'GET, HEAD', 'POST /usage: Allow: GET, HEAD');
        is($r->{headers}{'content-type'}, 'application/json',
           'POST /usage: a JSON body');
        is(meter_json($r->{body})->{error}{code} // '', 'method_not_allowed',
           'POST /usage: code method_not_allowed');
    },
);

add_response_body_check(sub {
    my ($block) = @_;
    my $name = $block->meter_check or return;
    $name =~ s/\s+//g;
    $checks{$name}->();
});

run_tests();

my @hits = meter_keys_in_logs($logs, server_root() . '/logs');
is(scalar @hits, 0, 'no API key in the logs of this suite')
    or Test::More::diag(Test::More::explain(\@hits));

__DATA__

=== TEST 1: no key: 401, WWW-Authenticate, JSON error
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- request
POST /v1/embeddings
{"model": "tiny", "input": "hello"}
--- more_headers
Content-Type: application/json
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="aiserve"
Content-Type: application/json
--- response_body_like: "code":"missing_api_key"
--- no_error_log
[error]



=== TEST 2: unknown key (well formed, valid checksum shape): 401 invalid_token
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- request
POST /v1/embeddings
{"model": "tiny", "input": "hello"}
--- more_headers
Content-Type: application/json
Authorization: Bearer ais_live_00000000000000000000000000000000000000
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="aiserve", error="invalid_token"
--- response_body_like: "code":"invalid_api_key"
--- no_error_log
[error]



=== TEST 3: another scheme than Bearer: 401
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- request
POST /v1/embeddings
{"model": "tiny", "input": "hello"}
--- more_headers
Content-Type: application/json
Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l
--- error_code: 401
--- response_body_like: "code":"invalid_api_key"



=== TEST 4: valid key, scheme case-insensitive (RFC 6750): 200 and usage
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- request
POST /v1/embeddings
{"model": "tiny", "input": "hello"}
--- more_headers
Content-Type: application/json
Authorization: bEaReR $KEY{alice}
--- error_code: 200
--- response_body_like: "usage":\{"prompt_tokens":\d+
--- no_error_log
[error]



=== TEST 5: key in the query string: 400, masked in the request line
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- more_headers eval
"Content-Type: application/json\nX-Probe: 1"
--- request eval
"POST /v1/embeddings?api_key=$::key_for_query\n{\"model\": \"tiny\", \"input\": \"x\"}"
--- error_code: 400
--- response_body_like: "code":"api_key_in_query"
--- error_log eval
qr/request: "POST \/v1\/embeddings\?api_key=ais_live_\w{4}\*{34} HTTP/
--- no_error_log
[error]



=== TEST 5b: percent-encoded '_' with a valid Bearer header: 400, masked
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- more_headers
Content-Type: application/json
Authorization: Bearer $KEY{alice}
--- request eval
"POST /v1/embeddings?k=ais%5Flive%5F$::key_rest\n{\"model\": \"tiny\", \"input\": \"x\"}"
--- error_code: 400
--- response_body_like: "code":"api_key_in_query"
--- error_log eval
qr/request: "POST \/v1\/embeddings\?k=ais%5Flive%5F\w{4}\*{34} HTTP/
--- no_error_log
[error]



=== TEST 5c: percent-encoded 'a' with a valid Bearer header: 400, masked
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- more_headers
Content-Type: application/json
Authorization: Bearer $KEY{alice}
--- request eval
"POST /v1/embeddings?k=%61is_live_$::key_rest\n{\"model\": \"tiny\", \"input\": \"x\"}"
--- error_code: 400
--- response_body_like: "code":"api_key_in_query"
--- error_log eval
qr/request: "POST \/v1\/embeddings\?k=%61is_live_\w{4}\*{34} HTTP/
--- no_error_log
[error]



=== TEST 5d: a key glued to more alphanumerics: 400, masked
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- more_headers
Content-Type: application/json
Authorization: Bearer $KEY{alice}
--- request eval
"POST /v1/embeddings?k=" . $::key_for_query . "ZeZx\n{\"model\": \"tiny\", \"input\": \"x\"}"
--- error_code: 400
--- response_body_like: "code":"api_key_in_query"
--- error_log eval
qr/request: "POST \/v1\/embeddings\?k=ais_live_\w{4}\*{34}ZeZx HTTP/
--- no_error_log
[error]



=== TEST 6: model not allowed for the key: 403
--- config
    location /other/v1/embeddings {
        aiserve_infer other api=openai;
        aiserve_meter on;
    }
--- request
POST /other/v1/embeddings
{"model": "other", "input": "hello"}
--- more_headers
Content-Type: application/json
Authorization: Bearer $KEY{alice}
--- error_code: 403
--- response_body_like: "code":"model_not_allowed"
--- no_error_log
[error]



=== TEST 7: aiserve_meter off: no key needed
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter off;
    }
--- request
POST /v1/embeddings
{"model": "tiny", "input": "hello"}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- no_error_log
[error]



=== TEST 8: revoke, block, set with the CLI take effect without reload
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- meter_check: cli_changes
--- response_body
ok
--- no_error_log
[error]



=== TEST 9: expired key: 401
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- meter_check: expired
--- response_body
ok



=== TEST 10: $aiserve_key_id and $aiserve_cost in log_format
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- meter_check: variables
--- response_body
ok
--- no_error_log
[error]



=== TEST 11: aiserve_usage: own rows, admin sees all, 401 without key
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location = /usage {
        aiserve_usage;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- meter_check: usage
--- response_body
ok
--- no_error_log
[error]



=== TEST 12: HTTP/2: a key in the query string is refused and masked
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- meter_check: h2_query
--- response_body
ok
--- no_error_log
[error]



=== TEST 13: a key in the query string of an unmetered location is masked
--- config
    location = /static {
        return 200 "args=$args\n";
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- meter_check: unmetered_query
--- response_body
ok
--- no_error_log
[error]



=== TEST 14: aiserve_meter on without a ledger is a configuration error
--- http_config
    aiserve_model tiny $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
--- must_die
--- error_log
"aiserve_meter" needs "aiserve_meter_db" and "aiserve_meter_zone"



=== TEST 15: invalid aiserve_meter_db parameter names the token
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB map_size=lots;
--- config
--- must_die
--- error_log
invalid map_size "map_size=lots" in "aiserve_meter_db"



=== TEST 16: aiserve_meter takes on, off or dry_run
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB;
    aiserve_meter_zone meter 1m;
--- config
    aiserve_meter maybe;
--- must_die
--- error_log
invalid value "maybe"



=== TEST 17: aiserve_price of a model no aiserve_model declares
--- http_config
    aiserve_model tiny $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
    aiserve_meter_db $TEST_NGINX_METER_DB;
    aiserve_meter_zone meter 1m;
    aiserve_price tiny 5;
    aiserve_price nosuch 5;
--- config
--- must_die
--- error_log eval
qr/unknown model "nosuch" in "aiserve_price": no "aiserve_model nosuch" in this http block in \S+nginx\.conf:\d+/



=== TEST 18: aiserve_price before the aiserve_model it names
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB;
    aiserve_meter_zone meter 1m;
    aiserve_price tiny 5;
    aiserve_model tiny $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- no_error_log
[emerg]



=== TEST 19: aiserve_usage in a location that already has aiserve_infer
--- config
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
        aiserve_usage;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/v1\/embeddings" in \S+nginx\.conf:\d+/



=== TEST 20: aiserve_usage after proxy_pass in one location
--- config
    location = /usage {
        proxy_pass http://127.0.0.1:1;
        aiserve_usage;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_usage" cannot be combined with another content handler in location "\/usage" in \S+nginx\.conf:\d+/



=== TEST 21: aiserve_meter_db below directories that do not exist yet
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_FRESH;
    aiserve_meter_zone fresh 1m;
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- meter_check: fresh_ledger
--- response_body
ok
--- no_error_log
[emerg]



=== TEST 22: the ledger keeps its currency: an aiserve_currency in USD (any case) starts
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB;
    aiserve_meter_zone meter 1m;
    aiserve_currency USD;
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- no_error_log
[emerg]



=== TEST 23: aiserve_currency that disagrees with the ledger's names the directive
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB;
    aiserve_meter_zone meter 1m;
    aiserve_currency eur;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_currency" "eur" in \S+nginx\.conf:\d+ disagrees with the ledger "\S+" of "aiserve_meter_db", whose costs are in "usd"/



=== TEST 24: aiserve_currency takes three letters
--- http_config
    aiserve_currency dollars;
--- config
--- must_die
--- error_log
invalid currency "dollars" in "aiserve_currency" (three letters, ISO 4217: usd, eur)
