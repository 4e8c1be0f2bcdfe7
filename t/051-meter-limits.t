# aiserve_meter: rate limits and budgets.  429 with Retry-After, the IETF
# RateLimit / RateLimit-Policy fields and OpenAI's x-ratelimit-* headers;
# refused requests charged nothing; a token budget under 32 concurrent
# clients never exceeded; dry_run counts and refuses nothing.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_http_concurrent);
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use AiserveMeter qw(meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_log_dir meter_json
                    meter_keys_in_logs);
use Time::HiRes ();

repeat_each(1);
no_shuffle();
# 64 clients at once (the concurrency check) and the listening sockets
worker_connections(1024);

my $db = meter_db('051');
my $logs = meter_log_dir();
my (%key, %id);

sub key {
    my ($name, @opts) = @_;
    ($id{$name}, $key{$name}) = meter_create_key($db, '--name', $name,
                                                 @opts);
}

key('rpm', '--rpm', 3);
key('tpm', '--tpm', 20);
key('budget', '--budget', 1, '--period', 'day');   # set once measured
key('dry', '--rpm', 1, '--models', 'other');
key('one', '--concurrency', 1);
key('probe');

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC");
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    $block->set_value(http_config => <<"EOC");
    access_log $logs/access.log;
    aiserve_model tiny $ENV{TEST_NGINX_AISERVE_ROOT}/models/tiny-st-cls;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter 1m;
    # the concurrency check's long request has 153000 tokens
    aiserve_max_request_tokens 200000;
EOC
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location /dry/v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter dry_run;
    }
    location = /t {
        return 200 "ok\\n";
    }
EOC
});

sub post {
    my ($who, %opt) = @_;
    return aiserve_http(server_port(),
                        meter_embed_request($key{$who},
                                            $opt{input} // 'hello', %opt));
}

# flushed_usage($key_id, $requests) -> the key's ledger row once a flush
# has written its requests.  flush=100ms: after 0.35 s a flush is due; on a
# loaded machine the flush timer can run late, so it reads again until the
# row counts $requests (at most 10 s).  Requests that should not count were
# settled with the others, so they would be in the same flush.
sub flushed_usage {
    my ($key_id, $requests) = @_;
    my $until = Time::HiRes::time() + 10;
    Time::HiRes::sleep(0.35);
    while (1) {
        my $u = meter_usage($db)->{$key_id} // {};
        return $u if ($u->{requests} // 0) >= $requests
                     || Time::HiRes::time() > $until;
        Time::HiRes::sleep(0.1);
    }
}

my %checks = (
    rpm => sub {
        my @ok = map { post('rpm') } 1 .. 3;
        is_deeply([map { $_->{status} } @ok], [200, 200, 200],
                  'rpm=3: three requests admitted');
        my $h = $ok[0]{headers};
        is($h->{'x-ratelimit-limit-requests'}, 3, 'x-ratelimit-limit-requests');
        is($h->{'x-ratelimit-remaining-requests'}, 2,
           'x-ratelimit-remaining-requests after the first');
        like($h->{'x-ratelimit-reset-requests'}, qr/^\d+(ms|s|m\d+s)$/,
             'x-ratelimit-reset-requests is a duration');
        is($h->{'ratelimit-policy'}, '"requests";q=3;w=60',
           'RateLimit-Policy');
        like($h->{ratelimit}, qr/^"requests";r=2;t=\d+$/, 'RateLimit');

        my $r = post('rpm');
        is($r->{status}, 429, 'fourth request: 429');
        my $e = meter_json($r->{body});
        is($e->{error}{code}, 'rate_limit_exceeded', '429: code');
        like($r->{headers}{'retry-after'}, qr/^[1-9]\d*$/,
             'one Retry-After, whole seconds: '
             . $r->{headers}{'retry-after'});
        ok($r->{headers}{'retry-after'} <= 20,
           'Retry-After: time until one request fits (60 s / 3)');
        is($r->{headers}{'x-ratelimit-remaining-requests'}, 0,
           '429: remaining 0');
        like($r->{headers}{ratelimit}, qr/^"requests";r=0;t=\d+$/,
             '429: RateLimit r=0');

        my $tokens = 0;
        $tokens += meter_json($_->{body})->{usage}{prompt_tokens} for @ok;
        my $u = flushed_usage($id{rpm}, 3);
        is($u->{requests}, 3, 'ledger: 3 requests, the refused one free');
        is($u->{prompt_tokens}, $tokens,
           "ledger: $tokens tokens of the admitted requests");
    },

    tpm => sub {
        my $t0 = Time::HiRes::time();
        my $r = post('tpm', input => 'hello');
        is($r->{status}, 200, 'tpm=20: first request');
        my $t = meter_json($r->{body})->{usage}{prompt_tokens};
        is($r->{headers}{'x-ratelimit-limit-tokens'}, 20,
           'x-ratelimit-limit-tokens');
        is($r->{headers}{'x-ratelimit-remaining-tokens'}, 20 - $t,
           "x-ratelimit-remaining-tokens = 20 - $t");
        my $n = 1;
        my $last;
        while ($n < 40) {
            $last = post('tpm', input => 'hello');
            last if $last->{status} != 200;
            $n++;
        }
        my $secs = Time::HiRes::time() - $t0;
        is($last->{status}, 429, "429 once the minute's tokens are used");
        # the bucket refills 20 tokens a minute while the loop runs
        my $max = int((20 + 20 * $secs / 60) / $t);
        ok($n >= int(20 / $t) && $n <= $max,
           "admitted $n requests of $t tokens: 20 tokens, plus what "
           . sprintf('%.1f s refilled', $secs));
        like($last->{headers}{'x-ratelimit-reset-tokens'}, qr/\d/,
             'x-ratelimit-reset-tokens');
        like($last->{headers}{ratelimit}, qr/"tokens";r=\d+;t=\d+/,
             'RateLimit names the tokens policy');

        $r = post('tpm', input => join(' ', ('word') x 40));
        is($r->{status}, 429, 'a request larger than tpm: 429');
        is($r->{headers}{'retry-after'}, 60, '... Retry-After 60');
    },

    budget => sub {
        # measure the tokens of one input with an unmetered key
        my $probe = post('probe', input => 'budget probe');
        my $t = meter_json($probe->{body})->{usage}{prompt_tokens}
            // do { fail('probe'); return };
        my $n = 40;
        my $budget = $n * $t;
        meter_cli($db, 'set', $id{budget}, '--budget', $budget,
                  '--period', 'day');

        my @reqs = map { meter_embed_request($key{budget}, 'budget probe') }
                   1 .. 128;
        my @res = aiserve_http_concurrent(server_port(), \@reqs, 32);
        my @ok = grep { ($_->{status} // 0) == 200 } @res;
        my @quota = grep { ($_->{status} // 0) == 429 } @res;
        my $sum = 0;
        $sum += meter_json($_->{body})->{usage}{prompt_tokens} for @ok;
        is(scalar @ok, $n, "budget $budget = $n x $t tokens: $n admitted "
                           . "of 128 from 32 clients");
        is($sum, $budget, 'admitted tokens equal the budget exactly');
        is(scalar @ok + scalar @quota, 128, 'every other request: 429');
        my @codes = grep { $_ ne 'insufficient_quota' }
                    map { meter_json($_->{body})->{error}{code} } @quota;
        is(scalar @codes, 0, '429s are insufficient_quota');
        like($quota[0]{headers}{'retry-after'}, qr/^\d+$/,
             'insufficient_quota: Retry-After (until the UTC day ends)');
        like($quota[0]{headers}{ratelimit}, qr/"budget";r=0;t=\d+/,
             'RateLimit: budget r=0');
        is(meter_json($quota[0]{body})->{error}{message},
           "the token budget of this API key is exhausted ($budget tokens "
           . "a day)", 'a spent budget: "exhausted", with the budget');

        # tokens remain, but fewer than the request needs: the message
        # says so (not "exhausted")
        meter_cli($db, 'set', $id{budget}, '--budget', $budget + $t - 1,
                  '--period', 'day');
        my $r = post('budget', input => 'budget probe');
        is($r->{status}, 429, 'a request larger than what is left: 429');
        is(meter_json($r->{body})->{error}{message},
           "this request needs $t tokens and the token budget of this API "
           . "key has " . ($t - 1) . " left today (of "
           . ($budget + $t - 1) . ")",
           'the message gives the tokens needed and left');

        my $u = flushed_usage($id{budget}, $n);
        ok($u->{prompt_tokens} <= $budget, 'ledger never above the budget');
        is($u->{prompt_tokens}, $sum, 'ledger equals the admitted usage');
        is($u->{requests}, $n, 'ledger: refused requests not counted');
    },

    concurrency => sub {
        # One long request (1500 inputs of ~100 tokens: several batches,
        # a few hundred milliseconds) is sent from a child process; 30 ms
        # later, while it is still in flight, 63 short ones arrive at once.
        # So the refusal does not depend on how fast this host answers one
        # short request.
        my $long = join ' ', ('word') x 100;
        pipe(my $rd, my $wr) or die "pipe: $!";
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            close $rd;
            my ($r) = aiserve_http_concurrent(server_port(),
                [meter_embed_request($key{one}, [($long) x 1500])], 1);
            print $wr JSON::PP->new->encode({ status => $r->{status},
                                              body => $r->{body} // '' });
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        Time::HiRes::sleep(0.03);
        my @reqs = map { meter_embed_request($key{one}, "request $_") }
                   1 .. 63;
        my @res = aiserve_http_concurrent(server_port(), \@reqs, 63);
        my $first = JSON::PP->new->decode(do { local $/; <$rd> });
        waitpid($pid, 0);
        unshift @res, $first;
        my @ok = grep { ($_->{status} // 0) == 200 } @res;
        my @busy = grep { ($_->{status} // 0) == 429 } @res;
        # Which request is admitted first depends on this host's scheduling
        # (the long one has a 30 ms head start, which a loaded machine can
        # overrun): the long one is either admitted or refused for the
        # concurrency limit, like any other.
        ok(($first->{status} // 0) == 200
           || (($first->{status} // 0) == 429
               && ($first->{body} // '') =~ /concurrent/),
           'the long request is admitted, or refused as concurrent')
            or diag("long request: " . ($first->{status} // 'none'));
        is(@ok + @busy, 64, 'concurrency=1: every answer 200 or 429')
            or diag(join ' ', map { ($_->{status} // 'none') . ' '
                                    . substr($_->{body} // '', 0, 200) }
                              grep { ($_->{status} // 0) != 200
                                     && ($_->{status} // 0) != 429 } @res);
        ok(@busy > 0, scalar(@busy) . ' of 64 refused while one was in '
                      . 'flight');
        like($busy[0]{body} // '', qr/concurrent/, '429 names concurrency')
            if @busy;
        my $tokens = 0;
        $tokens += meter_json($_->{body})->{usage}{prompt_tokens} for @ok;
        my $u = flushed_usage($id{one}, scalar @ok);
        is($u->{requests}, scalar @ok, 'ledger: admitted requests only');
        is($u->{prompt_tokens}, $tokens, 'ledger: their tokens');
    },

    dry_run => sub {
        my @res = map { post('dry', uri => '/dry/v1/embeddings') } 1 .. 3;
        is_deeply([map { $_->{status} } @res], [200, 200, 200],
                  'dry_run: model not allowed and over rpm, nothing refused');
        my $r = aiserve_http(server_port(),
                             meter_embed_request(undef, 'x',
                                 uri => '/dry/v1/embeddings'));
        is($r->{status}, 200, 'dry_run: no key, not refused');
        my $probe = "probe=" . int(Time::HiRes::time() * 1e6);
        $r = aiserve_http(server_port(),
                          meter_embed_request(undef, 'x',
                              uri => "/dry/v1/embeddings?$probe"));
        is($r->{status}, 200, 'dry_run: no key, not refused (probe)');
        open my $in, '<', "$logs/error.log" or die $!;
        my @warn = grep { /would refuse with 401 missing_api_key/
                          && /\Q$probe\E/ } <$in>;
        is(scalar @warn, 1, 'dry_run: the refusal is logged once')
            or diag(@warn);
        my $u = flushed_usage($id{dry}, 3);
        is($u->{requests}, 3, 'dry_run: requests counted in the ledger');
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

=== TEST 1: requests per minute: 429, Retry-After, RateLimit, x-ratelimit-*
--- request
GET /t
--- meter_check: rpm
--- response_body
ok
--- no_error_log
[error]



=== TEST 2: tokens per minute
--- request
GET /t
--- meter_check: tpm
--- response_body
ok
--- no_error_log
[error]



=== TEST 3: a budget of exactly N tokens under 32 concurrent clients
--- request
GET /t
--- meter_check: budget
--- response_body
ok
--- timeout: 30
--- no_error_log
[error]



=== TEST 4: max concurrent requests per key
--- request
GET /t
--- meter_check: concurrency
--- response_body
ok
--- no_error_log
[error]



=== TEST 5: dry_run counts and logs, refuses nothing
--- request
GET /t
--- meter_check: dry_run
--- response_body
ok
--- error_log eval
[qr/dry run, key_\d+ would get 429 rate_limit_exceeded/,
 qr/dry run, key_\d+ would get 403 model_not_allowed/,
 qr/dry run, would refuse with 401 missing_api_key/]
--- no_error_log
[error]
