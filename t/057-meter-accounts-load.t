# aiserve_meter under load: 32 clients at once, 16 of them creating keys
# through the admin API and rotating them (grace period 1 s) while using
# them, 16 calling the API with keys of their own.  No usage is lost (the
# ledger equals the responses, per key), and no request is authenticated by
# a rotated-away secret after its grace period ended.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http);
use AiserveMeter qw(meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_log_dir meter_json
                    meter_keys_in_logs);
use JSON::PP ();
use POSIX ();
use Time::HiRes ();

repeat_each(1);
no_shuffle();
master_on();
workers(2);
worker_connections(1024);

my $db = meter_db('056');
my $logs = meter_log_dir();
my $root = $ENV{TEST_NGINX_AISERVE_ROOT};
my $out = meter_db('056-out');
mkdir $out or die "mkdir $out: $!";

my ($admin_id, $admin) = meter_create_key($db, '--name', 'ops', '--admin');
my (@caller_id, @caller);
for my $i (0 .. 15) {
    ($caller_id[$i], $caller[$i]) = meter_create_key($db, '--name', "c$i");
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC");
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    $block->set_value(http_config => <<"EOC");
    access_log $logs/access.log;
    aiserve_model tiny $root/models/tiny-st-cls;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter056 2m;
EOC
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location /admin/ {
        aiserve_admin;
    }
    location = /t {
        return 200 "ok\\n";
    }
EOC
});

sub admin_call {
    my ($method, $path, $body) = @_;
    my $r = aiserve_http(server_port(), {
        method  => $method, uri => $path,
        headers => [ 'Authorization' => "Bearer $admin",
                     'Content-Type' => 'application/json' ],
        body    => JSON::PP::encode_json($body // {}),
    });
    return meter_json($r->{body}) // {};
}

# one call; returns [key id, secret tag, t0, t1, status, tokens]
sub call {
    my ($kid, $tag, $secret, $n) = @_;
    my $t0 = Time::HiRes::time();
    my $r = aiserve_http(server_port(),
                         meter_embed_request($secret, "load $n"));
    my $t1 = Time::HiRes::time();
    my $tokens = ($r->{status} // 0) == 200
                 ? meter_json($r->{body})->{usage}{prompt_tokens} : 0;
    return [$kid, $tag, $t0, $t1, $r->{status} // 0, $tokens];
}

sub rotator {
    my ($i) = @_;
    my @log;
    my $acct = admin_call('POST', '/admin/accounts', { name => "load$i" });
    my $k = admin_call('POST', "/admin/accounts/$acct->{id}/keys",
                       { name => "r$i" });
    my ($kid, $secret) = ($k->{id}, $k->{api_key});
    my @rotations;
    for my $round (1 .. 2) {
        push @log, call($kid, 'current', $secret, $_) for 1 .. 3;
        my $rot = admin_call('POST', "/admin/keys/$kid/rotate",
                             { grace_period => 1 });
        my $old = $secret;
        $secret = $rot->{api_key};
        my $until = $rot->{previous_secret_expires_at};
        push @rotations, { key => $kid, until => $until };
        # the old secret, through the end of its grace period and past it
        while (Time::HiRes::time() < $until + 0.6) {
            push @log, [@{ call($kid, "old$round", $old, 0) }, $until];
            push @log, call($kid, 'current', $secret, 0);
        }
    }
    return (\@log, \@rotations);
}

sub caller_loop {
    my ($i) = @_;
    my @log;
    my $t_end = Time::HiRes::time() + 4;
    my $n = 0;
    while (Time::HiRes::time() < $t_end) {
        push @log, call($caller_id[$i], 'caller', $caller[$i], $n++);
    }
    return (\@log, []);
}

my %checks = (
    load => sub {
        my @pids;
        for my $i (0 .. 31) {
            my $pid = fork() // die "fork: $!";
            if ($pid == 0) {
                my ($log, $rot) = $i < 16 ? rotator($i) : caller_loop($i - 16);
                open my $fh, '>', "$out/$i.json" or POSIX::_exit(1);
                print $fh JSON::PP::encode_json({ log => $log,
                                                  rotations => $rot });
                close $fh;
                POSIX::_exit(0);
            }
            push @pids, $pid;
        }
        waitpid($_, 0) for @pids;

        my (%tokens, %requests, @late, $old_ok, $old_refused, $n);
        my %status;
        for my $i (0 .. 31) {
            open my $fh, '<', "$out/$i.json" or die "$out/$i.json: $!";
            my $d = JSON::PP::decode_json(do { local $/; <$fh> });
            for my $c (@{ $d->{log} }) {
                my ($kid, $tag, $t0, $t1, $st, $tok, $until) = @$c;
                $n++;
                $status{$st}++;
                if ($st == 200) {
                    $tokens{$kid} += $tok;
                    $requests{$kid}++;
                }
                next unless $tag =~ /^old/;
                if ($st == 200) {
                    $old_ok++;
                    push @late, $c if $t0 >= $until + 0.05;
                } else {
                    $old_refused++;
                    push @late, $c if $st != 401 || $t1 < $until - 0.05;
                }
            }
        }
        diag("$n requests: " . join(', ', map { "$_: $status{$_}" }
                                         sort keys %status));
        ok(!$status{0}, 'every request answered');
        ok($old_ok && $old_refused, "old secrets: $old_ok accepted in "
           . "their grace period, $old_refused refused after it");
        is(scalar @late, 0, 'none accepted after its grace period ended, '
           . 'none refused before')
            or diag(JSON::PP::encode_json([@late[0 .. 4]]));

        Time::HiRes::sleep(0.5);
        my $u = meter_usage($db);
        my @bad = grep { ($u->{$_}{prompt_tokens} // 0) != $tokens{$_}
                         || ($u->{$_}{requests} // 0) != $requests{$_} }
                  keys %tokens;
        is(scalar @bad, 0, 'the ledger equals the responses for each of '
           . scalar(keys %tokens) . ' keys')
            or diag(join ' ', map { "$_: ledger "
                                    . ($u->{$_}{requests} // 0) . " vs "
                                    . $requests{$_} } @bad[0 .. 4]);
        my ($rc, $audit) = meter_cli($db, 'audit');
        is(scalar(() = $audit =~ /key\.rotate/g), 32,
           '32 rotations in the audit trail');
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

=== TEST 1: 32 clients: keys created and rotated while others call the API
--- request
GET /t
--- meter_check: load
--- response_body
ok
--- timeout: 60
--- no_error_log
[error]
