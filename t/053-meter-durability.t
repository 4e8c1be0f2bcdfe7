# aiserve_meter: durability.  A reload during load loses no usage; SIGKILL
# of one worker during load loses no settled usage; SIGKILL of every nginx
# process loses at most the flush window (measured and printed); a full
# LMDB map is grown, or, at max_map_size, new requests get 503 while the
# settled usage waits in the zone and reaches the ledger once it may grow.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_http_concurrent);
use AiserveMeter qw(meter_dir meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_log_dir meter_json
                    meter_keys_in_logs);
use POSIX ();
use Time::HiRes ();

repeat_each(1);
no_shuffle();
master_on();
workers(2);

my $db = meter_db('053');
my $full_db = meter_db('053-full');
my $grow_db = meter_db('053-grow');
my $small_db = meter_db('053-small');
my $logs = meter_log_dir();
my ($kid, $key) = meter_create_key($db, '--name', 'load');

$ENV{TEST_NGINX_METER_DB} = $db;
$ENV{TEST_NGINX_METER_FULL_DB} = $full_db;
$ENV{TEST_NGINX_METER_GROW_DB} = $grow_db;
$ENV{TEST_NGINX_METER_SMALL_DB} = $small_db;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC");
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    my $extra = $block->meter_http_config // '';
    $block->set_value(http_config => <<"EOC");
    access_log $logs/access.log;
    aiserve_model tiny $ENV{TEST_NGINX_AISERVE_ROOT}/models/tiny-st-cls;
$extra
EOC
    $block->set_value(config => <<"EOC");
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location = /t {
        return 200 "ok\\n";
    }
EOC
});

sub master_pid {
    open my $in, '<', server_root() . '/logs/nginx.pid' or return;
    my $pid = <$in>;
    chomp $pid;
    return $pid;
}

sub workers_of {
    my ($master) = @_;
    my @w;
    for my $dir (glob '/proc/[0-9]*') {
        open my $st, '<', "$dir/stat" or next;
        my $line = <$st> // '';
        my ($pid, $ppid) = $line =~ /^(\d+) \(.*?\) \S (\d+)/;
        push @w, $pid if defined $ppid && $ppid == $master;
    }
    return @w;
}

# Runs $n requests from 32 clients in a child process while $during->()
# runs here; returns (ok requests, ok tokens, failed requests, seconds).
sub load_while {
    my ($secret, $n, $during) = @_;
    my $out = meter_dir() . "/load.$$";
    my $t0 = Time::HiRes::time();
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my @reqs = map { meter_embed_request($secret, 'durable words') }
                   1 .. $n;
        my $start = Time::HiRes::time();
        my @res = aiserve_http_concurrent(server_port(), \@reqs, 32,
                                          timeout => 60);
        my ($ok, $tokens, $failed) = (0, 0, 0);
        for my $r (@res) {
            my $u = ($r->{status} // 0) == 200 ? meter_json($r->{body}) : undef;
            if ($u && $u->{usage}) {
                $ok++;
                $tokens += $u->{usage}{prompt_tokens};
            } else {
                $failed++;
            }
        }
        open my $f, '>', $out or POSIX::_exit(1);
        my $end = Time::HiRes::time();
        print $f "$ok $tokens $failed $start $end\n";
        close $f;
        POSIX::_exit(0);
    }
    $during->();
    waitpid $pid, 0;
    open my $f, '<', $out or die "no load result: $!";
    my ($ok, $tokens, $failed, $start, $end) = split ' ', scalar <$f>;
    unlink $out;
    return ($ok, $tokens, $failed, Time::HiRes::time() - $t0, $start, $end);
}

my %tally;    # key id -> [requests, tokens] the clients saw

sub tally {
    my ($id, $ok, $tokens) = @_;
    $tally{$id}[0] += $ok;
    $tally{$id}[1] += $tokens;
}

# Ballast until the map is full at 128k: keys under the first key's account
# (a key, its hash and an audit entry), then the smallest writes there are
# (an account's name and its audit entry), so that little room is left.
sub fill_map {
    my ($db) = @_;
    my ($n, $rc) = (0, 0);
    while ($n < 2000) {
        ($rc) = meter_cli($db, '--max-map-size', '128k', 'create',
                          '--account', 'acct_1', '--name', "ballast$n");
        last if $rc;
        $n++;
    }
    for my $i (1 .. 400) {
        my ($arc) = meter_cli($db, '--max-map-size', '128k', 'account',
                              'set', 'acct_1', '--name', "ballast$i");
        last if $arc;
    }
    return ($n, $rc);
}


my %checks = (
    reload => sub {
        my $master = master_pid();
        my ($ok, $tokens, $failed, $secs) = load_while($key, 3000, sub {
            for (1 .. 3) {
                Time::HiRes::sleep(0.4);
                kill 'HUP', $master;
            }
        });
        Test::More::diag(sprintf "reload: %d ok, %d failed in %.1f s",
                         $ok, $failed, $secs);
        is($failed, 0, 'no request failed across 3 reloads');
        tally($kid, $ok, $tokens);
        Time::HiRes::sleep(1);
        my $u = meter_usage($db)->{$kid};
        is($u->{requests}, $tally{$kid}[0],
           'ledger requests = responses, across reloads');
        is($u->{prompt_tokens}, $tally{$kid}[1],
           'ledger tokens = responses, across reloads');
    },

    kill_worker => sub {
        my $master = master_pid();
        # flush=20ms: with a flush every few requests, some of the kills
        # land inside one (between taking the counters and clearing them)
        my $kills = 0;
        my $log_from = -s "$logs/error.log" // 0;
        my ($ok, $tokens, $failed, $secs) = load_while($key, 8000, sub {
            for (1 .. 8) {
                Time::HiRes::sleep(0.1 + rand 0.2);
                my @w = workers_of($master);
                $kills += kill 'KILL', $w[int rand @w] if @w;
            }
        });
        Test::More::diag(sprintf "kill a worker %d times: %d ok, %d failed "
                         . "in %.1f s", $kills, $ok, $failed, $secs);
        ok($kills >= 6, "$kills workers killed during the load");
        if (open my $el, '<', "$logs/error.log") {
            my ($dropped, $again) = (0, 0);
            seek $el, $log_from, 0;
            while (<$el>) {
                $dropped++ if /committed but not cleared/;
                $again++ if /did not commit \(its worker was killed/;
            }
            Test::More::diag("flushes the kills interrupted: $dropped "
                             . "committed (copy dropped), $again not "
                             . "(written again)");
        }
        my $t = $ok ? $tokens / $ok : 0;
        Time::HiRes::sleep(1);
        my $u = meter_usage($db)->{$kid};
        my $extra = $u->{requests} - $tally{$kid}[0] - $ok;
        ok($extra >= 0, 'no settled request lost (ledger has every '
                        . "response; $extra more)");
        ok($extra <= $failed, 'ledger holds at most the requests the '
                              . 'killed worker had settled but not sent');
        is($u->{prompt_tokens}, $tally{$kid}[1] + $tokens + $extra * $t,
           'tokens agree');
        tally($kid, $ok + $extra, $tokens + $extra * $t);
    },

    kill_all => sub {
        my $master = master_pid();
        my @pids;
        my $killed_at;
        my ($ok, $tokens, $failed, $secs, $start, $end) =
            load_while($key, 15000, sub {
                Time::HiRes::sleep(1.7);
                @pids = ($master, workers_of($master));
                kill 'KILL', @pids;
                $killed_at = Time::HiRes::time();
            });
        my $u = meter_usage($db)->{$kid};
        my $ledger = $u->{requests} - $tally{$kid}[0];
        my $lost = $ok - $ledger;
        my $rate = $ok / (($end < $killed_at ? $end : $killed_at) - $start);
        Test::More::diag(sprintf "kill -9 of all nginx processes with "
            . "flush=1s: %d responses, %d in the ledger, %d lost "
            . "(%.2f s of traffic at %.0f req/s)",
            $ok, $ledger, $lost, $rate ? $lost / $rate : 0, $rate);
        ok($ledger <= $ok + $failed, 'nothing invented: the ledger holds '
           . 'at most the requests sent');
        ok($lost <= $rate * 1.5 + 32,
           'lost at most the flush window (1 s of traffic, plus the '
           . 'requests in flight)');
        tally($kid, $ledger, $u->{prompt_tokens} - $tally{$kid}[1]);
    },

    after_kill => sub {
        my $r = aiserve_http(server_port(),
                             meter_embed_request($key, 'after restart'));
        is($r->{status}, 200, 'nginx serves after kill -9 and restart');
        Time::HiRes::sleep(1.3);
        my $u = meter_usage($db)->{$kid};
        is($u->{requests}, $tally{$kid}[0] + 1,
           'the ledger counts on after the restart');
    },

    full => sub {
        # one key for traffic, then ballast keys until the map is full
        my ($id, $secret) = meter_create_key($full_db, '--name', 'full');
        my ($n, $rc) = fill_map($full_db);
        ok($rc && $n > 0, "map full after $n ballast keys");

        my ($ok, $tokens, $refused) = (0, 0, 0);
        for (1 .. 400) {
            my $r = aiserve_http(server_port(),
                                 meter_embed_request($secret, 'full map'));
            if ($r->{status} == 200) {
                $ok++;
                $tokens += meter_json($r->{body})->{usage}{prompt_tokens};
            } elsif ($r->{status} == 503) {
                $refused++;
                is(meter_json($r->{body})->{error}{code}, 'ledger_full',
                   '503 ledger_full') if $refused == 1;
                last if $refused == 3;
            }
            Time::HiRes::sleep(0.01);
        }
        ok($ok > 0, "$ok requests admitted before the first flush");
        is($refused, 3, 'then new requests are refused with 503');
        $tally{full} = [$ok, $tokens, $id];
        my $u = meter_usage($full_db)->{$id} // { requests => 0 };
        ok($u->{requests} < $ok, "$u->{requests} of them in the ledger yet: "
           . 'the rest waits in the zone');
    },

    full_later => sub {
        # the previous nginx exited: its last flush grew the map past the
        # cap rather than drop settled usage
        my ($ok, $tokens, $id) = @{ $tally{full} };
        my $u = meter_usage($full_db)->{$id};
        is($u->{requests}, $ok, 'settled usage reached the ledger');
        is($u->{prompt_tokens}, $tokens, '... every token of it');
        my $r = aiserve_http(server_port(),
                             meter_embed_request(undef, 'x'));
        is($r->{status}, 401, 'the grown ledger serves lookups');
    },

    grow => sub {
        my ($id, $secret) = meter_create_key($grow_db, '--name', 'grow');
        my ($n, $rc) = fill_map($grow_db);
        ok($rc, "map full after $n ballast keys");
        my @reqs = map { meter_embed_request($secret, 'grow') } 1 .. 300;
        my @res = aiserve_http_concurrent(server_port(), \@reqs, 8);
        my @ok = grep { ($_->{status} // 0) == 200 } @res;
        is(scalar @ok, 300, 'no request refused: the map grows');
        my $tokens = 0;
        $tokens += meter_json($_->{body})->{usage}{prompt_tokens} for @ok;
        Time::HiRes::sleep(0.5);
        my $u = meter_usage($grow_db)->{$id};
        is($u->{requests}, 300, 'ledger: every request');
        is($u->{prompt_tokens}, $tokens, 'ledger: every token');
        # Whether the flush needs the map to grow depends on the pages LMDB
        # has free after the ballast (it reuses the pages of older
        # transactions), so the growth itself is pinned by test_ledger;
        # here: when the map did grow, the worker grew it and said so.
        my $grown = (-s "$grow_db/data.mdb") > 128 * 1024;
        my $said = 0;
        if (open my $el, '<', "$logs/error.log") {
            $said = grep { /ledger map grown to/ } <$el>;
        }
        ok(!$grown || $said, 'a grown map is logged ('
                             . ($grown ? 'grown' : 'not needed') . ')');
    },
);

# a zone too small for the keys in use: refused with 503, nothing lost
$checks{small_zone} = sub {
    my @keys = map { [meter_create_key($small_db, '--name', "k$_")] }
               1 .. 150;
    my ($ok, $tokens, $busy) = (0, 0, 0);
    my %ok_per;
    for my $k (@keys) {
        my $r = aiserve_http(server_port(),
                             meter_embed_request($k->[1], 'small zone'));
        if ($r->{status} == 200) {
            $ok++;
            $ok_per{ $k->[0] }++;
            $tokens += meter_json($r->{body})->{usage}{prompt_tokens};
        } elsif ($r->{status} == 503
                 && meter_json($r->{body})->{error}{code}
                    eq 'meter_unavailable')
        {
            $busy++;
        }
    }
    ok($busy > 0, "zone full: $busy of 150 keys refused with 503");
    is($ok + $busy, 150, 'the others admitted');
    Time::HiRes::sleep(0.5);
    my $u = meter_usage($small_db);
    my ($req, $tok) = (0, 0);
    for my $id (keys %$u) {
        $req += $u->{$id}{requests};
        $tok += $u->{$id}{prompt_tokens};
    }
    is($req, $ok, 'ledger: every admitted request, none of the refused');
    is($tok, $tokens, 'ledger: their tokens');
};

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

=== TEST 1: nginx -s reload during load loses no usage
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_DB flush=200ms;
    aiserve_meter_zone meter 1m;
--- request
GET /t
--- meter_check: reload
--- response_body
ok
--- timeout: 90
--- no_error_log
[error]



=== TEST 2: SIGKILL of a worker, 8 times during load, loses no settled usage
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_DB flush=20ms;
    aiserve_meter_zone meter 1m;
--- request
GET /t
--- meter_check: kill_worker
--- response_body
ok
--- timeout: 90
--- error_log eval
qr/\[alert\] .* exited on signal 9/



=== TEST 3: SIGKILL of every nginx process loses at most the flush window
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_DB flush=1s;
    aiserve_meter_zone meter 1m;
--- request
GET /t
--- meter_check: kill_all
--- response_body
ok
--- timeout: 90



=== TEST 4: after kill -9 of everything, nginx restarts on the same ledger
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_DB flush=200ms;
    aiserve_meter_zone meter 1m;
--- request
GET /t
--- meter_check: after_kill
--- response_body
ok
--- no_error_log
[error]



=== TEST 5: map full at max_map_size: 503 for new requests, usage kept
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_FULL_DB map_size=128k max_map_size=128k
                     flush=100ms;
    aiserve_meter_zone full 1m;
--- request
GET /t
--- meter_check: full
--- response_body
ok
--- timeout: 90
--- error_log
flush failed, usage kept in the zone



=== TEST 6: ... and reaches the ledger at exit, the map grown past the cap
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_FULL_DB flush=100ms;
    aiserve_meter_zone full 1m;
--- request
GET /t
--- meter_check: full_later
--- response_body
ok



=== TEST 7: map full below max_map_size: grown when needed, nothing refused or lost
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_GROW_DB map_size=128k flush=100ms;
    aiserve_meter_zone grow 1m;
--- request
GET /t
--- meter_check: grow
--- response_body
ok
--- timeout: 90
--- no_error_log
[error]



=== TEST 8: a zone too small: 503 for new keys, no settled usage lost
--- meter_http_config
    aiserve_meter_db $TEST_NGINX_METER_SMALL_DB flush=100ms;
    aiserve_meter_zone small 32k;
--- request
GET /t
--- meter_check: small_zone
--- response_body
ok
--- timeout: 90
--- error_log eval
qr/\[alert\] .*aiserve meter: zone is full/
