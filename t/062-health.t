# /health answers 503 with a JSON error naming the model while a model's
# queue is full (aiserve_max_queue), and 200 again once it drained.  One
# worker (master off), so that the queued request and /health meet in the
# same process.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveApprox;
use AiserveTest qw(aiserve_http aiserve_request);
use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes ();

our @MINILM = grep { length $_->{text} } minilm_cases();
our @LONG = (grep { @{ $_->{input_ids} } == 256 } @MINILM)[0 .. 15];
@LONG = (@LONG) x 2;
my $json = JSON::PP->new->utf8->canonical;

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

my %scenario = (

    # a model whose queue is full: /health is 503 until it drains
    queue_full => sub {
        my ($name) = @_;
        my @s;
        for my $body ({ input => [ map { $_->{text} } @LONG ] },
                      { input => $MINILM[0]{text} })
        {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => server_port(),
                                          Proto => 'tcp') or die "$!";
            $s->autoflush(1);
            print $s post('/v1/embeddings', $body);
            push @s, $s;
            Time::HiRes::sleep(0.15);
        }
        my $r = get('/health');
        Test::More::is($r->{status}, 503, "$name - 503 while the queue is full");
        Test::More::is(approx_diff(eval { $json->decode($r->{body}) },
            main::err('server_error', 'unhealthy', undef,
                      'the queue of model "minilm" is full (1 requests, '
                      . 'aiserve_max_queue)'), 0), '',
            "$name - the error says which model");
        for my $s (@s) {
            local $/;
            my $raw = <$s> // '';
            close $s;
            Test::More::like($raw, qr{^HTTP/1\.1 200}, "$name - queued request answered");
        }
        Test::More::is(get('/health')->{status}, 200,
                       "$name - 200 once the queue drained");
    },

);

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeat_idx) = @_;
    my $scenario = $block->scenario or return;
    $scenario{$scenario}->($block->name);
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: /health is 503 while a model's queue is full
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model minilm $TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 truncate=on;
aiserve_max_queue 1;
--- config
location = /v1/embeddings { aiserve_infer minilm; }
location = /health { aiserve_endpoint health; }
--- request
GET /health
--- response_body
{"status":"ok"}
--- scenario: queue_full
--- timeout: 120
--- no_error_log
[error]
