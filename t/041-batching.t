# The per-worker queue and the thread-pool batches under load: many clients
# at once get their own correct answers out of shared batches; a request
# that waits longer than aiserve_queue_timeout (0: no timeout), or finds
# the queue full, gets 503 with Retry-After; clients that go away while their batch runs do
# not hurt the worker.  A "heavy" request (32 MiniLM inputs of 256 tokens)
# keeps the model busy while the others arrive.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;
use AiserveTest qw(aiserve_http_concurrent aiserve_request);
use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes ();

our @CASES = grep { length $_->{text} } minilm_cases();
our @LONG = (grep { @{ $_->{input_ids} } == 256 } @CASES)[0 .. 15];
@LONG = (@LONG) x 2;
our @SHORT = (grep { @{ $_->{input_ids} } < 40 } @CASES)[0 .. 15];
my $json = JSON::PP->new->utf8->canonical;

sub post {
    my ($uri, $body) = @_;
    return aiserve_request({ uri => $uri, body => $json->encode($body),
                             headers => [ 'Content-Type' => 'application/json' ] });
}

# starts the heavy request on its own connection; returns the socket
sub start_heavy {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => server_port(), Proto => 'tcp')
        or die "connect: $!";
    $s->autoflush(1);
    print $s post('/heavy', { input => [ map { $_->{text} } @LONG ] });
    Time::HiRes::sleep(0.15);
    return $s;
}

sub finish_heavy {
    my ($s, $name) = @_;
    local $/;
    my $raw = <$s> // '';
    close $s;
    my ($status) = $raw =~ m{^HTTP/1\.1 (\d+)};
    my ($body) = $raw =~ /\r\n\r\n(.*)\z/s;
    my $r = eval { $json->decode($body) };
    Test::More::is($status, 200, "$name - the heavy request is answered");
    Test::More::is(scalar @{ $r->{data} // [] }, scalar @LONG,
       "$name - the heavy request has all its embeddings");
    Test::More::is(approx_diff($r->{data}[-1]{embedding}, $LONG[-1]{embedding}, 1e-4), '',
       "$name - the heavy request's last embedding is right");
}

my %scenario = (

    # 16 clients at once while the model is busy: they wait in the queue and
    # share batches, each gets its own embedding.
    concurrent => sub {
        my ($name) = @_;
        my $heavy = start_heavy();
        my @res = aiserve_http_concurrent(server_port(),
            [ map { post('/v1/embeddings', { input => $_->{text} }) } @SHORT ],
            undef, timeout => 100);
        my @bad = grep {
            ($res[$_]{status} // 0) != 200
            || approx_diff(eval { $json->decode($res[$_]{body}) }->{data}[0]{embedding},
                           $SHORT[$_]{embedding}, 1e-4) ne ''
        } 0 .. $#SHORT;
        Test::More::is(scalar @bad, 0, "$name - 16 clients, each its own correct embedding")
            or Test::More::diag Test::More::explain [ @res[@bad] ];
        my @batched = grep { ($_->{headers}{'x-batch'} // 0) > 1 } @res;
        Test::More::is(scalar @batched, scalar @SHORT,
           "$name - every one of them came from a batch of several")
            or Test::More::diag Test::More::explain [ map { $_->{headers}{'x-batch'} } @res ];
        finish_heavy($heavy, $name);
    },

    # a request that waits longer than aiserve_queue_timeout
    timeout => sub {
        my ($name) = @_;
        my $heavy = start_heavy();
        my ($r) = aiserve_http_concurrent(server_port(),
            [ post('/impatient', { input => "hello" }) ], undef, timeout => 100);
        Test::More::is($r->{status}, 503, "$name - 503 after the queue timeout");
        Test::More::is($r->{headers}{'retry-after'}, 7, "$name - Retry-After");
        Test::More::like($r->{body}, qr/"code":"queue_timeout"/, "$name - JSON error");
        finish_heavy($heavy, $name);
    },

    # aiserve_queue_timeout 0: no timeout, the request waits for its batch
    patient => sub {
        my ($name) = @_;
        my $heavy = start_heavy();
        my ($r) = aiserve_http_concurrent(server_port(),
            [ post('/patient', { input => $SHORT[0]{text} }) ], undef,
            timeout => 100);
        Test::More::is($r->{status}, 200, "$name - answered after waiting");
        Test::More::cmp_ok($r->{headers}{'x-queue'} // 0, '>', 0,
                           "$name - it did wait in the queue");
        Test::More::is(approx_diff(eval { $json->decode($r->{body}) }->{data}[0]{embedding},
                       $SHORT[0]{embedding}, 1e-4), '',
           "$name - with the right embedding");
        finish_heavy($heavy, $name);
    },

    # the queue holds one request: the heavy one, which spans two batches
    full => sub {
        my ($name) = @_;
        my $heavy = start_heavy();
        my ($r) = aiserve_http_concurrent(server_port(),
            [ post('/v1/embeddings', { input => "hello" }) ], undef,
            timeout => 100);
        Test::More::is($r->{status}, 503, "$name - 503 when the queue is full");
        Test::More::is($r->{headers}{'retry-after'}, 1, "$name - Retry-After");
        Test::More::like($r->{body}, qr/"type":"server_error","param":null,"code":"queue_full"/,
             "$name - JSON error");
        finish_heavy($heavy, $name);
    },

    # the thread pool's own queue (max_queue=1) overflows: the heavy batch
    # runs, one other model's batch waits, a third model's cannot be posted
    overflow => sub {
        my ($name) = @_;
        my $heavy = start_heavy();
        my @res = aiserve_http_concurrent(server_port(),
            [ post('/predict', { inputs => "paris" }),
              post('/ner', { inputs => "paris" }) ], undef, timeout => 100);
        my @st = sort map { $_->{status} // 0 } @res;
        Test::More::is("@st", "200 503", "$name - one waits, one gets 503");
        my ($r) = grep { ($_->{status} // 0) == 503 } @res;
        Test::More::like($r->{body} // '', qr/"code":"overloaded"/,
                         "$name - JSON error");
        Test::More::is($r->{headers}{'retry-after'}, 1, "$name - Retry-After");
        finish_heavy($heavy, $name);
    },

    # nginx -s reload while a batch is in flight: the old worker finishes
    # it before it exits
    reload => sub {
        my ($name) = @_;
        my $heavy = start_heavy();
        open my $f, '<', server_root() . "/logs/nginx.pid" or die "pid: $!";
        my $pid = <$f>;
        close $f;
        chomp $pid;
        kill 'HUP', $pid;
        finish_heavy($heavy, $name);
        my ($r) = aiserve_http_concurrent(server_port(),
            [ post('/v1/embeddings', { input => $SHORT[1]{text} }) ], undef,
            timeout => 100);
        Test::More::is($r->{status}, 200, "$name - the new worker answers");
    },

    # clients that close their connection while queued or computing
    abort => sub {
        my ($name) = @_;
        my $h1 = start_heavy();
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => server_port());
        print $s post('/v1/embeddings', { input => "queued then gone" });
        Time::HiRes::sleep(0.05);
        close $s;
        close $h1;
        Time::HiRes::sleep(1.5);
        my ($r) = aiserve_http_concurrent(server_port(),
            [ post('/v1/embeddings', { input => $SHORT[0]{text} }) ], undef,
            timeout => 100);
        Test::More::is($r->{status}, 200, "$name - the worker still answers");
        Test::More::is(approx_diff(eval { $json->decode($r->{body}) }->{data}[0]{embedding},
                       $SHORT[0]{embedding}, 1e-4), '',
           "$name - with the right embedding");
    },
);

add_response_body_check(sub {
    my ($block, $body, $idx, $repeat, $dry_run) = @_;
    my $s = $block->scenario or return;
    $s =~ s/\s+//g;
    return if $dry_run;
    $scenario{$s}->($block->name);
});

master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: many clients at once get their own answers from shared batches
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_queue_timeout 120s;
--- config
location = /v1/embeddings {
    aiserve_infer minilm;
    add_header X-Batch $aiserve_batch_size always;
}
location = /heavy {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request
POST /v1/embeddings
{"input": "warm up"}
--- response_headers
X-Batch: 1
--- scenario: concurrent
--- timeout: 120
--- no_error_log
[error]



=== TEST 2: aiserve_queue_timeout: 503 with Retry-After
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
--- config
location = /heavy {
    aiserve_infer minilm;
}
location = /impatient {
    aiserve_infer minilm;
    aiserve_queue_timeout 1ms;
    aiserve_retry_after 7s;
}
--- more_headers
Content-Type: application/json
--- request
POST /impatient
{"input": "alone, so not queued"}
--- response_body_like: "prompt_tokens":8
--- scenario: timeout
--- timeout: 120
--- error_log eval
qr/\[warn\] .*aiserve: request waited more than 1 ms in the queue of model "minilm"/
--- no_error_log
[error]



=== TEST 3: aiserve_max_queue: 503 when the queue is full, logged at aiserve_log_level
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_max_queue 1;
aiserve_max_batch_tokens 2048;
aiserve_queue_timeout 120s;
aiserve_log_level notice;
--- config
location = /heavy {
    aiserve_infer minilm;
}
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request
POST /v1/embeddings
{"input": "hello"}
--- response_body_like: "prompt_tokens":3
--- scenario: full
--- timeout: 120
--- error_log eval
qr/\[notice\] .*aiserve: queue of model "minilm" is full \(1 requests\)/
--- no_error_log
[error]



=== TEST 4: clients that go away while queued or in a batch
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_queue_timeout 120s;
--- config
location = /heavy {
    aiserve_infer minilm;
}
location = /v1/embeddings {
    aiserve_infer minilm;
}
--- more_headers
Content-Type: application/json
--- request
POST /v1/embeddings
{"input": "hello"}
--- response_body_like: "prompt_tokens":3
--- scenario: abort
--- timeout: 120
--- no_error_log
[error]
[crit]



=== TEST 5: the thread pool's queue overflows: 503 overloaded
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
thread_pool one threads=1 max_queue=1;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_model cls $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_model ner $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-ner;
aiserve_thread_pool one;
aiserve_queue_timeout 120s;
--- config
location = /heavy { aiserve_infer minilm; }
location = /predict { aiserve_infer cls; }
location = /ner { aiserve_infer ner; }
--- more_headers
Content-Type: application/json
--- request
POST /predict
{"inputs": "alone"}
--- response_body_like: ^\[\{"label":"\w+","score":[0-9.e-]+\}\]$
--- scenario: overflow
--- timeout: 120
--- error_log
thread pool "one" queue overflow: 1 tasks waiting



=== TEST 6: a reload while a batch is in flight: the old worker finishes it
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_queue_timeout 120s;
--- config
location = /heavy { aiserve_infer minilm; }
location = /v1/embeddings { aiserve_infer minilm; }
--- more_headers
Content-Type: application/json
--- request
POST /v1/embeddings
{"input": "hello"}
--- response_body_like: "prompt_tokens":3
--- scenario: reload
--- timeout: 120
--- no_error_log
[error]
[alert]



=== TEST 7: aiserve_queue_timeout 0 means no timeout: a request waits until its batch starts
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
--- config
location = /heavy { aiserve_infer minilm; }
location = /patient {
    aiserve_infer minilm;
    aiserve_queue_timeout 0;
    add_header X-Queue $aiserve_queue_time always;
}
--- more_headers
Content-Type: application/json
--- request
POST /patient
{"input": "alone, so not queued"}
--- response_body_like: "prompt_tokens":8
--- scenario: patient
--- timeout: 120
--- no_error_log
[error]
aiserve: request waited more than
