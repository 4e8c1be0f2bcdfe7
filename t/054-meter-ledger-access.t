# aiserve_meter_db: a ledger the worker user cannot open stops nginx -t, a
# start and a reload with an [emerg] that names the ledger, the user and
# the directory in the way, before nginx listens; nginx -t creates nothing.
# A worker that finds the ledger unreadable later keeps serving (503 for
# metered requests) and opens it once it is readable again.
#
# Test::Nginx's runner writes "user root;" when it runs as root, so this
# suite writes its own nginx.conf (workers as "nobody") and runs nginx
# itself.  It needs root (to start workers as another user).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_free_port aiserve_sanitizer_env
                   aiserve_sanitizer_reports);
use File::Path ();
use File::Temp ();
use JSON::PP ();
use Time::HiRes ();

plan skip_all => 'needs root: the workers run as "nobody"' if $> != 0;
plan skip_all => 'needs the user "nobody" and the group "nogroup"'
    unless defined getpwnam('nobody') && defined getgrnam('nogroup');

my $root = $ENV{TEST_NGINX_AISERVE_ROOT} // "$FindBin::Bin/..";
my $module = $ENV{TEST_NGINX_AISERVE_MODULE}
             // "$root/build/ngx_http_aiserve_module.so";
my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $keys = ($ENV{TEST_NGINX_AISERVE_TOOLS} // "$root/tools")
           . "/aiserve-keys";

# under /tmp, so that "nobody" can search every directory above it
my $dir = File::Temp::tempdir('aiserve-054-XXXXXX', TMPDIR => 1,
                              CLEANUP => !$ENV{AISERVE_KEEP});
chmod 0755, $dir;
File::Path::make_path("$dir/logs", "$dir/open", "$dir/private");
chmod 0755, "$dir/open";
chmod 0700, "$dir/private";     # root only

my $port = aiserve_free_port();
my $errlog = "$dir/logs/error.log";
my $pidfile = "$dir/logs/nginx.pid";

sub write_conf {
    my ($file, $ledger) = @_;
    open my $out, '>', $file or die "$file: $!";
    print $out <<"EOC";
load_module $module;
user nobody nogroup;
worker_processes 1;
error_log $errlog info;
pid $pidfile;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    aiserve_model tiny $root/models/tiny-st-cls;
    aiserve_meter_db $ledger flush=100ms;
    aiserve_meter_zone meter054 1m;
    server {
        listen 127.0.0.1:$port;
        location = /v1/embeddings { aiserve_infer tiny; aiserve_meter on; }
    }
}
EOC
    close $out;
    return $file;
}

# run_nginx(@args) -> (exit code, what nginx printed)
# make test-asan: the sanitizers' reports of the nginx processes this suite
# starts (the workers run as "nobody": a directory anyone may write)
my $san_logs = File::Temp::tempdir('aiserve-054-san-XXXXXX', TMPDIR => 1,
                                   CLEANUP => 1);
chmod 0777, $san_logs;

sub run_nginx {
    my (@args) = @_;
    my $cmd = aiserve_sanitizer_env($san_logs)
              . join ' ', map { quotemeta } $nginx, '-p', "$dir/", @args;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub listening {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return defined $s;
}

sub master_pid {
    open my $in, '<', $pidfile or return undef;
    my $pid = <$in>;
    chomp $pid if defined $pid;
    return $pid;
}

sub stop_nginx {
    my $pid = master_pid() or return;
    kill 'QUIT', $pid;
    for (1 .. 100) {
        last unless kill 0, $pid;
        Time::HiRes::sleep(0.05);
    }
}

sub embed {
    my ($secret, %opt) = @_;
    return aiserve_http($port, {
        method  => 'POST',
        uri     => '/v1/embeddings',
        headers => [ 'Content-Type' => 'application/json',
                     'Authorization' => "Bearer $secret" ],
        body    => '{"input": "hello"}',
    }, %opt);
}

# the error log from byte $pos on
sub log_since {
    my ($pos) = @_;
    open my $in, '<', $errlog or return '';
    seek $in, $pos, 0;
    local $/;
    return <$in> // '';
}

my $private_ledger = "$dir/private/var/ledger";
my $bad = write_conf("$dir/bad.conf", $private_ledger);
my $good_ledger = "$dir/open/var/ledger";
my $good = write_conf("$dir/good.conf", $good_ledger);

my $emerg = qr/\[emerg\] .*user[ ]"nobody"[ ]of[ ]the[ ]worker[ ]processes
               [ ]cannot[ ]open[ ]the[ ]ledger[ ]"\Q$private_ledger\E"
               [ ]of[ ]"aiserve_meter_db"[ ]in[ ]\Q$bad\E:\d+:
               [ ]no[ ]search[ ]permission[ ]on[ ]"\Q$dir\E\/private"
               [ ]\(13:[ ]Permission[ ]denied\)/x;

# nginx -t: fails, names the ledger, the user and the directory in the way
{
    my ($rc, $out) = run_nginx('-t', '-c', $bad);
    isnt($rc, 0, 'nginx -t fails for a ledger below a directory of mode 0700');
    like($out, $emerg, 'nginx -t: [emerg] with the path, the user and the '
                       . 'directory that blocks');
    ok(!-e "$dir/private/var", 'nginx -t created nothing');
}

# nginx -t on a good path passes and creates nothing either, also in a
# ledger directory that exists but is empty
{
    my ($rc, $out) = run_nginx('-t', '-c', $good);
    is($rc, 0, 'nginx -t passes for a ledger the workers can open')
        or diag($out);
    ok(!-e "$dir/open/var", 'nginx -t did not create the ledger');

    File::Path::make_path("$dir/open/empty");
    my $conf = write_conf("$dir/empty.conf", "$dir/open/empty");
    ($rc, $out) = run_nginx('-t', '-c', $conf);
    is($rc, 0, 'nginx -t passes for an empty ledger directory') or diag($out);
    my @made = glob("$dir/open/empty/*");
    is("@made", '', 'nginx -t wrote nothing into it');
}

# a start fails before nginx listens
{
    my ($rc, $out) = run_nginx('-c', $bad);
    isnt($rc, 0, 'nginx does not start');
    like($out, $emerg, 'start: the same [emerg]');
    ok(!listening(), 'nothing listens on the port');
    my $pid = master_pid();
    ok(!defined $pid || !kill(0, $pid), 'no master left running');
    ok(!-e "$dir/private/var", 'the failed start left no ledger, hmac.key '
                               . 'or directory behind');
}

# an existing ledger below the same directory: refused as well
{
    my $out = `\Q$keys\E --db \Q$private_ledger\E create --name x 2>&1`;
    is($? >> 8, 0, 'a ledger made by aiserve-keys below the private '
                   . 'directory') or diag($out);
    my ($rc, $msg) = run_nginx('-t', '-c', $bad);
    isnt($rc, 0, 'nginx -t fails for the existing ledger too');
    like($msg, $emerg, 'and names it');
}

# the good path: nginx creates the ledger, gives it to the worker user and
# a worker opens it (a metered request is admitted)
{
    my ($rc, $out) = run_nginx('-c', $good);
    is($rc, 0, 'nginx starts with a ledger the workers can open')
        or diag($out);
    my @st = stat $good_ledger;
    is($st[4], scalar getpwnam('nobody'), 'the ledger belongs to "nobody"');
    my ($id, $secret);
    my $k = `\Q$keys\E --db \Q$good_ledger\E create --name ok 2>/dev/null`;
    ($secret) = $k =~ /^api_key: (\S+)/m;
    ok($secret, 'a key in the new ledger');
    my $r = embed($secret);
    is($r->{status}, 200, 'a metered request is served by a worker');

    # the ledger becomes unreadable for "nobody" while nginx runs, and a
    # worker is replaced (killed here): the new worker cannot open the
    # ledger, and serves all the same (503 for metered requests) instead of
    # exiting and leaving the master listening with no worker
    chmod 0700, "$dir/open";
    my $master = master_pid();
    my ($old) = split ' ', `pgrep -P $master`;
    my $logged = -s $errlog;
    kill 'KILL', $old;
    my $new;
    for (1 .. 100) {
        Time::HiRes::sleep(0.05);
        ($new) = grep { $_ != $old } split ' ', `pgrep -P $master`;
        last if $new;
    }
    ok($new, 'the master started a new worker');
    $r = embed($secret, timeout => 5);
    is($r->{status}, 503, 'the new worker answers a metered request: 503');
    is(eval { JSON::PP::decode_json($r->{body})->{error}{code} } // '',
       'meter_unavailable', '... meter_unavailable');
    ok(kill(0, $new), 'the new worker is still running');
    like(log_since($logged), qr/\[emerg\][ ].*aiserve[ ]meter:[ ].*
                               \Q$good_ledger\E.*Permission[ ]denied;
                               [ ]metered[ ]requests[ ]get[ ]503/x,
         'the worker logs why, naming the ledger');

    # readable again: the next flush tick opens it, no restart needed
    chmod 0755, "$dir/open";
    for (1 .. 40) {
        $r = embed($secret, timeout => 5);
        last if ($r->{status} // 0) == 200;
        Time::HiRes::sleep(0.05);
    }
    is($r->{status}, 200, 'the ledger readable again: the worker serves');
    like(log_since($logged), qr/\[notice\][ ].*aiserve[ ]meter:[ ]ledger
                               [ ]"\Q$good_ledger\E"[ ]opened/x,
         'and logs that it opened the ledger');

    # a reload to the unreadable ledger is refused; the running
    # generation keeps serving
    my $before = -s $errlog;
    write_conf($good, $private_ledger);
    kill 'HUP', master_pid();
    my $log = '';
    for (1 .. 100) {
        Time::HiRes::sleep(0.05);
        $log = log_since($before);
        last if $log =~ /\[emerg\]/;
    }
    like($log, qr/\[emerg\] \s .* user \s "nobody" \s of \s the \s worker
                  \s processes \s cannot \s open \s the \s ledger
                  \s "\Q$private_ledger\E"/x,
         'reload: [emerg] naming the ledger and the user');
    $r = embed($secret);
    is($r->{status}, 200, 'after the refused reload the old workers serve');
    stop_nginx();
}

is(aiserve_sanitizer_reports($san_logs), '', 'no sanitizer report');

done_testing();
