# aiserve_meter: fine-tuning charges in the ledger as a job makes them
# (aiserve_ledger_training_reserve/settle/release, run by t/unit/
# ledger_charge while nginx serves): a job over the budget refused as
# insufficient_quota, what a job holds and trains counted against the
# budget inference requests see, the fine_tuning rows in /v1/usage, the
# costs view and the export at the training= price, settles that repeat
# charging nothing twice.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http);
use AiserveMeter qw(meter_db meter_cli meter_embed_request meter_log_dir
                    meter_json);
use POSIX ();
use Time::HiRes ();

repeat_each(1);
no_shuffle();

my $db = meter_db('058');
my $logs = meter_log_dir();
my $root = $ENV{TEST_NGINX_AISERVE_ROOT};
my $charge = "$root/build/t/ledger_charge";

# key_1 in acct_1: 1000 tokens a month
my ($rc, $out) = meter_cli($db, 'create', '--name', 'trainer', '--budget',
                           1000, '--period', 'month');
my ($secret) = $out =~ /^api_key: (\S+)/m;
my ($kid) = $out =~ /^key_id: key_(\d+)/m;
my ($acct) = $out =~ /^account_id: acct_(\d+)/m;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC");
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    $block->set_value(http_config => <<"EOC") unless defined $block->http_config;
    aiserve_model tiny $root/models/tiny-st-cls;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter058 1m;
    aiserve_price tiny 20 training=3000000;
EOC
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
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

sub charge {
    my $o = `$charge $db @_ 2>&1`;
    return ($? >> 8, $o);
}

# an inference request: (status, prompt tokens, the budget left in its
# RateLimit field)
sub embed {
    my $r = aiserve_http(server_port(), meter_embed_request($secret, 'hello'));
    my ($left) = ($r->{headers}{ratelimit} // '') =~ /"budget";r=(\d+)/;
    my $t = (meter_json($r->{body}) // {})->{usage}{prompt_tokens};
    return ($r->{status}, $t, $left);
}

sub usage {
    my ($query, $path) = @_;
    my $r = aiserve_http(server_port(), {
        uri => ($path // '/v1/usage') . "?$query",
        headers => [ 'Authorization' => "Bearer $secret" ],
    });
    return meter_json($r->{body});
}

my $today = POSIX::strftime('%Y-%m-%d', gmtime);

my %checks = (
    training => sub {
        my ($s, $t1, $left) = embed();
        is($s, 200, 'an inference request');
        is($left, 1000 - $t1, "budget left: $left");
        Time::HiRes::sleep(0.3);

        my ($rc, $o) = charge('reserve', $acct, $kid, 'tiny', 'ftjob-a', 600,
                              3000000);
        is($rc, 0, 'a job reserves 600 trained tokens') or diag($o);
        ($rc, $o) = charge('reserve', $acct, $kid, 'tiny', 'ftjob-b', 500,
                           3000000);
        is($rc, 3, 'a second job of 500 is refused');
        like($o, qr/^insufficient_quota: .* has ${\ (400 - $t1)} left this month/,
             "... as insufficient_quota: $o");

        Time::HiRes::sleep(0.3);
        my ($s2, $t2, $left2) = embed();
        is($left2, 1000 - $t1 - 600 - $t2,
           "inference sees what the job holds: $left2 left");

        ($rc) = charge('settle', $acct, "''", 'ftjob-a', 250);
        is($rc, 0, 'settled at 250 trained tokens');
        ($rc) = charge('settle', $acct, "''", 'ftjob-a', 250);
        is($rc, 0, 'the same settle again (a resumed job)');
        ($rc) = charge('settle', 99, "''", 'ftjob-a', 300);
        is($rc, 4, "another account's job: not found");

        my $u = usage("start_time=$today&group_by=api,model");
        my ($ft) = grep { ($_->{api} // '') eq 'fine_tuning' }
                   @{ $u->{data}[0]{results} };
        is_deeply([$ft->{model}, $ft->{trained_tokens}, $ft->{input_tokens}],
                  ['tiny', 250, 0],
                  '/v1/usage: the fine_tuning row, 250 trained tokens once');
        my $c = usage("start_time=$today&group_by=api", '/v1/costs');
        my ($fc) = grep { ($_->{api} // '') eq 'fine_tuning' }
                   @{ $c->{data}[0]{results} };
        is($fc->{amount}{value_micro}, 750,
           'its cost: 250 tokens at 3000000 micro-units per 1M = 750');

        my (undef, $csv) = meter_cli($db, 'export', '--format', 'jsonl');
        my @rows = grep { ($_->{api} // '') eq 'fine_tuning' }
                   map { meter_json($_) } split /\n/, $csv;
        is_deeply([map { [$_->{model}, $_->{price_micro},
                          $_->{trained_tokens}, $_->{cost_micro}] } @rows],
                  [['tiny', 3000000, 250, 750]],
                  'the export: model, training price, trained tokens, cost');

        ($rc) = charge('release', $acct, 'ftjob-a');
        is($rc, 0, 'the job ends (cancelled at 250): released');
        Time::HiRes::sleep(0.3);
        my ($s3, $t3, $left3) = embed();
        is($left3, 1000 - $t1 - $t2 - 250 - $t3,
           "what it trained stays charged, the rest is free: $left3 left");
        ($rc) = charge('settle', $acct, "''", 'ftjob-a', 400);
        is($rc, 1, 'a released job takes no more charges');
    },
);

add_response_body_check(sub {
    my ($block) = @_;
    my $name = $block->meter_check or return;
    $name =~ s/\s+//g;
    $checks{$name}->();
});

run_tests();

__DATA__

=== TEST 1: a job's reservation, settles and release, seen by inference budgets, /v1/usage and the export
--- request
GET /t
--- meter_check: training
--- response_body
ok
--- no_error_log
[error]



=== TEST 2: aiserve_price training= takes an integer price
--- http_config
    aiserve_model tiny $TEST_NGINX_AISERVE_ROOT/models/tiny-st-cls;
    aiserve_price tiny 20 training=cheap;
--- config
--- must_die
--- error_log
invalid parameter "training=cheap" in "aiserve_price" (training=PRICE: integer micro-units per 1M trained tokens)
