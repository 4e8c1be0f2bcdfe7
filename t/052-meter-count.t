# aiserve_meter: exact counts under concurrency.  32 clients x 200 requests
# over 4 keys and 2 workers: the ledger (read with aiserve-keys usage and
# export) equals, per key, the sum of the "usage" fields of the successful
# responses; the export's row ids are stable.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http_concurrent);
use AiserveMeter qw(meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_log_dir meter_json
                    meter_keys_in_logs);
use Time::HiRes ();

repeat_each(1);
no_shuffle();
master_on();
workers(2);

my $db = meter_db('052');
my $logs = meter_log_dir();
my @keys = map { [meter_create_key($db, '--name', "client$_")] } 1 .. 4;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC");
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    $block->set_value(http_config => <<"EOC");
    access_log $logs/access.log;
    aiserve_model tiny $ENV{TEST_NGINX_AISERVE_ROOT}/models/tiny-st-cls;
    aiserve_meter_db $db flush=200ms;
    aiserve_meter_zone meter 1m;
    aiserve_price tiny 1337;
EOC
});

my @words = qw(alpha beta gamma delta epsilon zeta eta theta iota kappa);

add_response_body_check(sub {
    my ($block) = @_;
    $block->meter_check or return;

    # 32 clients x 200 requests, inputs of varying length and count
    my @reqs;
    for my $i (0 .. 32 * 200 - 1) {
        my $k = $keys[$i % 4][1];
        my @input = map { join ' ', @words[0 .. ($i * 7 + $_) % 10] }
                    0 .. $i % 3;
        push @reqs, meter_embed_request($k, @input == 1 ? $input[0]
                                                        : \@input);
    }

    my $t0 = Time::HiRes::time();
    my @res = aiserve_http_concurrent(server_port(), \@reqs, 32,
                                      timeout => 120);
    my $secs = Time::HiRes::time() - $t0;
    Test::More::diag(sprintf "%d requests in %.1f s", scalar @res, $secs);

    my (%tokens, %requests);
    my $failed = 0;
    for my $i (0 .. $#res) {
        my $r = $res[$i];
        if (($r->{status} // 0) != 200) {
            $failed++;
            next;
        }
        my $id = $keys[$i % 4][0];
        $tokens{$id} += meter_json($r->{body})->{usage}{prompt_tokens};
        $requests{$id}++;
    }
    is($failed, 0, 'every request answered 200');

    Time::HiRes::sleep(0.6);    # flush=200ms
    my $u = meter_usage($db);
    for my $k (@keys) {
        my $id = $k->[0];
        is($u->{$id}{prompt_tokens}, $tokens{$id},
           "$id: ledger tokens = sum of usage.prompt_tokens ($tokens{$id})");
        is($u->{$id}{requests}, $requests{$id},
           "$id: ledger requests = successful responses");
        is($u->{$id}{cost_micro}, int(($tokens{$id} * 1337 + 500) / 1000),
           "$id: cost in micro-units, rounded half up once per row");
        is($u->{$id}{errors}, 0, "$id: no errors");
    }

    my (undef, $csv1) = meter_cli($db, 'export', '--format', 'csv');
    my (undef, $csv2) = meter_cli($db, 'export', '--format', 'csv');
    is($csv1, $csv2, 'export twice: identical, row ids stable');
    my @rows = grep { !/^row_id/ } split /\n/, $csv1;
    is(scalar @rows, 4, 'one row per key, model and day');
    my %ids = map { (split /,/)[0] => 1 } @rows;
    is(scalar keys %ids, 4, 'row ids unique');
    my $sum = 0;
    $sum += (split /,/)[6] for @rows;
    my $want = 0;
    $want += $_ for values %tokens;
    is($sum, $want, 'export: prompt_tokens column sums to the responses');

    my (undef, $jsonl) = meter_cli($db, 'export', '--format', 'jsonl');
    my @j = map { meter_json($_) } split /\n/, $jsonl;
    is_deeply([sort map { $_->{row_id} } @j], [sort keys %ids],
              'JSON lines export: same row ids');
});

run_tests();

my @hits = meter_keys_in_logs($logs, server_root() . '/logs');
is(scalar @hits, 0, 'no API key in the logs of this suite')
    or Test::More::diag(Test::More::explain(\@hits));

__DATA__

=== TEST 1: 32 clients x 200 requests: the ledger equals the responses
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
--- meter_check: count
--- response_body
ok
--- timeout: 150
--- no_error_log
[error]
