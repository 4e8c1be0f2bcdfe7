# aiserve_meter: usage over HTTP in buckets shaped like OpenAI's
# organization usage and costs API (start_time, end_time, bucket_width,
# group_by), a key reading its own account's usage, an admin any account's;
# unknown parameters refused; and keys pasted into request headers
# (User-Agent, Referer, custom ones, Authorization itself) masked before
# the access log's $http_* variables read them.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http);
use AiserveMeter qw(meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_log_dir meter_json
                    meter_keys_in_logs);
use POSIX ();
use Time::HiRes ();
use IO::Socket::INET ();
use Time::Local ();

repeat_each(1);
no_shuffle();

my $db = meter_db('055');
my $logs = meter_log_dir();
my $root = $ENV{TEST_NGINX_AISERVE_ROOT};

my (%key, %id);
($id{admin}, $key{admin}) = meter_create_key($db, '--name', 'ops', '--admin');
# acct_2: two keys; acct_3: one
($id{a}, $key{a}) = meter_create_key($db, '--name', 'a');
($id{a2}, $key{a2}) = meter_create_key($db, '--name', 'a2',
                                       '--account', 'acct_2');
($id{b}, $key{b}) = meter_create_key($db, '--name', 'b');
# acct_4: one request a minute, one model
($id{r}, $key{r}) = meter_create_key($db, '--name', 'r', '--rpm', 1,
                                     '--models', 'tiny');

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC");
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    $block->set_value(http_config => <<"EOC");
    log_format headers055 '"\$request" \$status ua="\$http_user_agent" '
                          'ref="\$http_referer" x="\$http_x_note" '
                          'auth="\$http_authorization" key=\$aiserve_key_id';
    access_log $logs/access-055.log headers055;
    aiserve_model tiny $root/models/tiny-st-cls;
    aiserve_model tiny2 $root/models/tiny-st-max;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter055 1m;
    aiserve_price tiny 20;
    aiserve_price tiny2 3;
    aiserve_currency eur;
EOC
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location /v2/embeddings {
        aiserve_infer tiny2 api=openai;
        aiserve_meter on;
    }
    location = /embed {
        aiserve_infer tiny api=embed;
        aiserve_meter on;
    }
    location = /v1/usage {
        aiserve_usage;
    }
    location = /v1/costs {
        aiserve_usage costs;
    }
    location = /t {
        return 200 "ok\\n";
    }
EOC
});

sub embed {
    my ($who, %opt) = @_;
    return aiserve_http(server_port(),
                        meter_embed_request($key{$who}, $opt{input} // 'hello',
                                            %opt));
}

sub usage {
    my ($who, $query, $path) = @_;
    my $r = aiserve_http(server_port(), {
        uri => ($path // '/v1/usage') . ($query ? "?$query" : ''),
        headers => [ 'Authorization' => "Bearer $key{$who}" ],
    });
    $r->{json} = meter_json($r->{body});
    return $r;
}

my $today = POSIX::strftime('%Y-%m-%d', gmtime);
my $midnight = int(time / 86400) * 86400;
my %sent;

my %checks = (
    buckets => sub {
        for my $c (['a', 3, 'v1'], ['a2', 2, 'v1'], ['a2', 1, 'v2'],
                   ['b', 4, 'v1'])
        {
            my ($who, $n, $v) = @$c;
            for (1 .. $n) {
                my $r = embed($who, uri => "/$v/embeddings",
                              model => $v eq 'v1' ? 'tiny' : 'tiny2');
                is($r->{status}, 200, "$who $v");
                my $t = meter_json($r->{body})->{usage}{prompt_tokens};
                $sent{$who}{$v eq 'v1' ? 'tiny' : 'tiny2'}{tokens} += $t;
                $sent{$who}{$v eq 'v1' ? 'tiny' : 'tiny2'}{requests}++;
            }
        }

        # read at once: unflushed usage counts too
        my $r = usage('a', "start_time=" . ($midnight - 2 * 86400));
        is($r->{status}, 200, 'GET /v1/usage?start_time=');
        is($r->{json}{object}, 'page', 'a page');
        is(scalar @{ $r->{json}{data} }, 3,
           'three day buckets: two days ago to today');
        my $last = $r->{json}{data}[2];
        is_deeply([$last->{object}, $last->{start_time}, $last->{end_time}],
                  ['bucket', $midnight, $midnight + 86400],
                  'the last bucket is today, UTC');
        is_deeply($r->{json}{data}[0]{results}, [], 'an empty day');
        my $res = $last->{results};
        is(scalar @$res, 1, 'no group_by: one result');
        my $want_t = 0;
        my $want_n = 0;
        for my $who ('a', 'a2') {
            for my $m (keys %{ $sent{$who} }) {
                $want_t += $sent{$who}{$m}{tokens};
                $want_n += $sent{$who}{$m}{requests};
            }
        }
        is_deeply([$res->[0]{object}, $res->[0]{input_tokens},
                   $res->[0]{num_model_requests}],
                  ['organization.usage.embeddings.result', $want_t, $want_n],
                  "key a sees its account's usage (both keys): $want_t "
                  . "tokens, $want_n requests");

        $r = usage('a', "start_time=$today&group_by=model,api_key_id");
        my %got = map { ("$_->{api_key_id}/$_->{model}" =>
                         [$_->{input_tokens}, $_->{num_model_requests}]) }
                  @{ $r->{json}{data}[0]{results} };
        my %want;
        for my $who ('a', 'a2') {
            for my $m (keys %{ $sent{$who} }) {
                $want{"$id{$who}/$m"} = [$sent{$who}{$m}{tokens},
                                         $sent{$who}{$m}{requests}];
            }
        }
        is_deeply(\%got, \%want, 'group_by=model,api_key_id');

        $r = usage('admin', "start_time=$today&group_by=account_id");
        %got = map { ($_->{account_id} => $_->{num_model_requests}) }
               @{ $r->{json}{data}[0]{results} };
        is_deeply(\%got, { acct_2 => 6, acct_3 => 4 },
                  'an admin sees every account: group_by=account_id');
        $r = usage('admin', "start_time=$today&account_id=acct_3");
        is($r->{json}{data}[0]{results}[0]{num_model_requests}, 4,
           'an admin narrows to one account');
        $r = usage('b', "start_time=$today&account_id=acct_2");
        is($r->{status}, 403, "another account's usage: 403");

        $r = usage('a', "start_time=$today&bucket_width=1mo");
        my ($y, $m) = $today =~ /^(\d+)-(\d+)/;
        is($r->{json}{data}[0]{start_time},
           Time::Local::timegm(0, 0, 0, 1, $m - 1, $y),
           'bucket_width=1mo: the month bucket starts on the 1st, UTC');
        is($r->{json}{data}[0]{results}[0]{num_model_requests}, 6,
           '... with the month\'s requests');

        # costs: micro-units per 1000 tokens, rounded half up once per result
        $r = usage('a', "start_time=$today&group_by=line_item", '/v1/costs');
        my %cost = map { ($_->{line_item} => $_->{amount}) }
                   @{ $r->{json}{data}[0]{results} };
        my $nano = ($sent{a}{tiny}{tokens} + $sent{a2}{tiny}{tokens}) * 20;
        is($cost{tiny}{value_micro}, int(($nano + 500) / 1000),
           "costs: tiny $nano nano-units, rounded once");
        is($cost{tiny}{currency}, 'eur', 'the currency of aiserve_currency');
        ok(abs($cost{tiny}{value} - $cost{tiny}{value_micro} / 1e6) < 1e-12,
           'value in currency units');
        is($r->{json}{data}[0]{results}[0]{object},
           'organization.costs.result', 'costs result objects');
    },

    usage_headers => sub {
        my $r = embed('b', input => 'hello world');
        is($r->{status}, 200, 'a metered request');
        my $h = $r->{headers};
        my $t = meter_json($r->{body})->{usage}{prompt_tokens};
        is($h->{'x-compute-tokens'}, $t, "x-compute-tokens: $t, as usage");
        like($h->{$_}, qr/^\d+$/, "$_: whole milliseconds ($h->{$_})")
            for qw(x-compute-time x-tokenization-time x-queue-time
                   x-inference-time x-total-time);
        ok($h->{'x-total-time'} >= $h->{'x-tokenization-time'}
           && $h->{'x-total-time'} >= $h->{'x-queue-time'},
           'x-total-time covers the others');
        is($h->{'x-aiserve-cost'}, sprintf('%d.%03d', int($t * 20 / 1000),
                                           ($t * 20) % 1000),
           "x-aiserve-cost: $t tokens at 20 micro-units per 1000, exact");
        is($h->{'x-aiserve-currency'}, 'eur', 'x-aiserve-currency');
        $r = aiserve_http(server_port(),
                          meter_embed_request('ais_live_' . ('A' x 38), 'x'));
        is($r->{status}, 401, 'a refused request');
        ok(!exists $r->{headers}{'x-compute-tokens'}, '... has none');
    },

    refusals => sub {
        my @st = (embed('r')->{status}, embed('r')->{status},
                  embed('r', uri => '/v2/embeddings',
                        model => 'tiny2')->{status});
        is_deeply(\@st, [200, 429, 403], '200, then 429 (rpm), 403 (model)');
        my ($rc) = meter_cli($db, 'revoke', $id{r});
        is(embed('r')->{status}, 401, 'revoked: 401');
        Time::HiRes::sleep(0.35);
        my (undef, $out) = meter_cli($db, 'usage', '--key', $id{r},
                                     '--by', 'total', '--json');
        my %sum;
        for my $line (split /\n/, $out) {
            my $row = meter_json($line);
            $sum{$_} += $row->{$_} for qw(requests refused_401 refused_403
                                          refused_429);
        }
        is_deeply(\%sum, { requests => 1, refused_401 => 1,
                           refused_403 => 1, refused_429 => 1 },
                  'the ledger counts the refusals of the key, apart from '
                  . 'its requests');
        my $r = usage('admin', "start_time=$today&group_by=api_key_id");
        my ($res) = grep { ($_->{api_key_id} // '') eq $id{r} }
                    @{ $r->{json}{data}[0]{results} };
        is_deeply($res->{refused}, { 401 => 1, 403 => 1, 429 => 1 },
                  '... and so does /v1/usage');
        my (undef, $csv) = meter_cli($db, 'export', '--key', $id{r},
                                     '--format', 'csv');
        like($csv, qr/,refused_401,refused_403,refused_429,api,price_micro,
                      trained_tokens,storage_bytes\n/x,
             'export: the refusal columns, then those of ledger version 3');
    },

    pages => sub {
        # ten day buckets, nine days ago to today: pages of limit buckets
        my $q = 'start_time=' . ($midnight - 9 * 86400);
        my $r = usage('a', $q);
        is(scalar @{ $r->{json}{data} }, 7, 'by default a page of 7 buckets');
        ok($r->{json}{has_more} && $r->{json}{next_page},
           "has_more, next_page $r->{json}{next_page}");
        my (@starts, $n);
        my $page = '';
        while (1) {
            $r = usage('a', "$q&limit=3$page");
            is($r->{status}, 200, "page " . ++$n);
            push @starts, map { $_->{start_time} } @{ $r->{json}{data} };
            last unless $r->{json}{has_more};
            $page = "&page=$r->{json}{next_page}";
        }
        is($n, 4, 'limit=3: four pages');
        is_deeply(\@starts, [map { $midnight - (9 - $_) * 86400 } 0 .. 9],
                  'ten days, each once, in order');
        ok(!defined $r->{json}{next_page}, 'the last page: next_page null');
        my $today_res = $r->{json}{data}[-1]{results}[0];
        ok($today_res->{num_model_requests} > 0,
           "the last page has today's usage");
    },

    by_api => sub {
        my $r = aiserve_http(server_port(), {
            method  => 'POST',
            uri     => '/embed',
            headers => [ 'Content-Type'  => 'application/json',
                         'Authorization' => "Bearer $key{b}" ],
            body    => '{"inputs": "hello there"}',
        });
        is($r->{status}, 200, 'a request on api=embed');
        $r = usage('b', "start_time=$today&group_by=api");
        my %got = map { ($_->{api} => $_->{num_model_requests}) }
                  @{ $r->{json}{data}[0]{results} };
        ok($got{embed} == 1 && $got{openai} >= 4,
           'group_by=api: embed 1, openai ' . ($got{openai} // 0));
        $r = usage('b', '');
        my @rows = @{ $r->{json}{data} };
        my ($e) = grep { $_->{api} eq 'embed' } @rows;
        is_deeply([$e->{model}, $e->{price_micro}, $e->{requests}],
                  ['tiny', 20, 1],
                  'the row of the month: its api and the price in force');
        ok(!grep({ !defined $_->{api} || !defined $_->{price_micro} }
                 @rows), 'every new row has its api and price');
    },

    refused => sub {
        for my $q (['start_time=0&colour=red', 'unknown_parameter'],
                   ['start_time=0&project_ids=p', 'unknown_parameter'],
                   ['start_time=0&limit=0', 'invalid_value'],
                   ['start_time=0&limit=32', 'invalid_value'],
                   ['start_time=0&page=2', 'invalid_value'],
                   ['start_time=86400&page=page_0', 'invalid_value'],
                   ['start_time=0&page=page_100', 'invalid_value'],
                   ['end_time=5', 'missing_parameter'],
                   ['start_time=yesterday', 'invalid_value'],
                   ['start_time=2026-02-30', 'invalid_value'],
                   ['start_time=2026-12-+6', 'invalid_value'],
                   ['start_time=2026-12-%206', 'invalid_value'],
                   ['start_time=-001-12-06', 'invalid_value'],
                   ['start_time=0&start_time=86400', 'invalid_parameter'],
                   ['start_time=0&start_date=1970-01-02',
                    'invalid_parameter'],
                   ['start_time=0&bucket_width=1mo&bucket_width=1d',
                    'invalid_parameter'],
                   ['start_time=0&limit=2&limit=3', 'invalid_parameter'],
                   ['start_time=100&end_time=50', 'invalid_value'],
                   ['start_time=0&bucket_width=1h', 'invalid_value'],
                   ['start_time=0&group_by=project_id', 'invalid_value'],
                   ['start_time=0&end_time=999999999', 'invalid_value'],
                   ['start_time', 'invalid_parameter'])
        {
            my $r = usage('a', $q->[0]);
            is("$r->{status} " . ($r->{json}{error}{code} // '-'),
               "400 $q->[1]", "?$q->[0]: 400 $q->[1]");
        }
        my $r = usage('a', '');
        is($r->{json}{object}, 'list',
           'no query string: the first format, unchanged');
        $r = usage('a', 'start_time=2024-02-29&end_time=2024-03-01');
        is($r->{json}{data}[0]{start_time}, 1709164800,
           'a leap day is a date');
        Time::HiRes::sleep(0.2);
        open my $in, '<', "$logs/access-055.log" or die $!;
        my @colour = grep { /colour/ } <$in>;
        close $in;
        like($colour[-1], qr/"GET \/v1\/usage\?start_time=0&colour=red /,
             'an unknown parameter: the request line logged as sent');
    },

    headers => sub {
        my $secret = $key{b};
        my $offset = -s "$logs/access-055.log" // 0;
        my $r = aiserve_http(server_port(), {
            method  => 'POST',
            uri     => '/v1/embeddings',
            headers => [
                'Content-Type'  => 'application/json',
                'Authorization' => "Bearer $secret",
                'User-Agent'    => "curl/8 $secret",
                'Referer'       => "https://x.example/?k=$secret",
                'X-Note'        => "key%3D$secret",
            ],
            body => '{"model": "tiny", "input": "hello"}',
        });
        is($r->{status}, 200, 'a key in Authorization still authenticates '
           . 'once its header is masked');
        $r = aiserve_http(server_port(), {
            uri => '/t',
            headers => [ 'User-Agent' => "bot $secret" ],
        });
        is($r->{status}, 200, 'an unmetered location');
        Time::HiRes::sleep(0.2);
        open my $in, '<', "$logs/access-055.log" or die $!;
        seek $in, $offset, 0;
        my @lines = grep { /ua="(curl|bot)/ } <$in>;
        close $in;
        is(scalar @lines, 2, 'both requests logged');
        my $prefix = substr($secret, 0, 13);
        like($lines[0], qr/ua="curl\/8 \Q$prefix\E\*{34}"/,
             'User-Agent masked');
        like($lines[0], qr/ref="https:\/\/x.example\/\?k=\Q$prefix\E\*{34}"/,
             'Referer masked');
        like($lines[0], qr/x="key%3D\Q$prefix\E\*{34}"/,
             'a custom header masked');
        like($lines[0], qr/auth="Bearer \Q$prefix\E\*{34}"/,
             '$http_authorization masked');
        like($lines[0], qr/key=\Q$id{b}\E/, '$aiserve_key_id');
        like($lines[1], qr/ua="bot \Q$prefix\E\*{34}"/,
             'masked in an unmetered location too');
        ok(!grep({ index($_, $secret) >= 0 } @lines),
           'the secret is nowhere in the access log');

        # requests nginx refuses while reading their headers, before the
        # post-read phase: their log lines read the same variables
        $offset = -s "$logs/access-055.log";
        for my $raw (
            "GET /t?k=$secret HTTP/1.1\r\nHost: a\r\n"
            . "User-Agent: early $secret\r\nReferer: $secret\r\n"
            . "Host: b\r\n\r\n",
            "GET /t HTTP/1.1\r\nUser-Agent: early $secret\r\n\r\n",
            "GET /t HTTP/1.1\r\nHost: a\r\nUser-Agent: early x\r\n"
            . "X-Note: $secret\r\nAuthorization: Bearer $secret\r\n"
            . "Transfer-Encoding: gzip\r\n\r\n")
        {
            my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                             PeerPort => server_port())
                or die "connect: $!";
            print $sock $raw;
            my $status = <$sock>;
            close $sock;
            like($status, qr/^HTTP\/1.1 (400|501) /,
                 'nginx refuses it before the post-read phase');
        }
        Time::HiRes::sleep(0.2);
        open $in, '<', "$logs/access-055.log" or die $!;
        seek $in, $offset, 0;
        @lines = grep { /ua="early/ } <$in>;
        close $in;
        is(scalar @lines, 3, 'the early refusals logged');
        my $m = qr/\Q$prefix\E\*{34}/;
        like($lines[0],
             qr/"GET \/t\?k=$m HTTP\/1.1" 400 ua="early $m" ref="$m"/,
             'a duplicate Host: request line, User-Agent, Referer masked');
        like($lines[1], qr/" 400 ua="early $m"/,
             'no Host: User-Agent masked');
        like($lines[2], qr/" 501 .* x="$m" auth="Bearer $m"/,
             'a 501 Transfer-Encoding: custom header, Authorization masked');
        ok(!grep({ index($_, $secret) >= 0 } @lines),
           'the secret is in no line of an early refusal');
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

=== TEST 1: usage and costs in day and month buckets, grouped
--- request
GET /t
--- meter_check: buckets
--- response_body
ok
--- no_error_log
[error]



=== TEST 2: usage headers on a metered response
--- request
GET /t
--- meter_check: usage_headers
--- response_body
ok
--- no_error_log
[error]



=== TEST 3: refused requests (401, 403, 429) counted per key
--- request
GET /t
--- meter_check: refusals
--- response_body
ok
--- no_error_log
[error]



=== TEST 4: pages of buckets: limit, has_more, next_page
--- request
GET /t
--- meter_check: pages
--- response_body
ok
--- no_error_log
[error]



=== TEST 5: group_by=api, and the api and price of each row
--- request
GET /t
--- meter_check: by_api
--- response_body
ok
--- no_error_log
[error]



=== TEST 6: unknown or bad parameters: 400, never ignored
--- request
GET /t
--- meter_check: refused
--- response_body
ok
--- no_error_log
[error]



=== TEST 7: keys in request headers masked before the access log
--- request
GET /t
--- meter_check: headers
--- response_body
ok
--- no_error_log
[error]
