# A worker's exit after inference: graceful shutdown (SIGQUIT) and the old
# workers of a reload (SIGHUP) end with "exit", none on a signal.
#
# nginx's thread pools let their threads go with pthread_exit() without
# waiting for them, then the worker dlclose()s the modules and calls
# exit().  A pool thread that ran the encoder runs the destructors of its
# thread-specific data (the engine's oneDNN stream and GEMM cache) on its
# way out; when the worker had unmapped the module by then, the thread
# jumped into unmapped memory (SIGSEGV, seen once under heavy load in
# t/057, and in CI's t/015).  t/shim/exit_delay.c, preloaded into nginx,
# makes that timing the rule: each let-go thread waits before its
# destructors, and the worker waits after dlclose(); the module keeps
# itself mapped in workers, so the destructors still find their code (and
# they only hand their objects to a living thread, src/aiserve_gemm.c).  Not a Test::Nginx suite: it starts,
# reloads and stops nginx itself, so it runs once (the reload is covered).

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http_concurrent aiserve_free_port
                   aiserve_sanitizer_env aiserve_sanitizer_reports);
use File::Path ();
use Time::HiRes qw(sleep time);

plan skip_all => 'starts and reloads nginx itself: runs once, not in HUP mode'
    if $ENV{TEST_NGINX_USE_HUP};

my $root = "$FindBin::Bin/..";
my $module = $ENV{TEST_NGINX_AISERVE_MODULE}
             // "$root/build/ngx_http_aiserve_module.so";
my $shim = "$root/build/t/exit_delay.so";
my $nginx = $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx';
my $prefix = "$FindBin::Bin/servroot-063-$$";
my $port = aiserve_free_port();

-f $shim or BAIL_OUT("$shim is missing: make build/t/exit_delay.so");
-f $module or BAIL_OUT("$module is missing: make module");

File::Path::remove_tree($prefix);
File::Path::make_path("$prefix/logs", "$prefix/conf");
chmod 0777, $prefix, "$prefix/logs";

# As root, nginx would run its workers as "nobody", which may not read the
# models of this checkout: the checkout's owner instead.
my $user = '';
if ($> == 0) {
    my @st = stat $root;
    $user = 'user ' . getpwuid($st[4]) . ' ' . getgrgid($st[5]) . ';';
}

open my $cf, '>', "$prefix/conf/nginx.conf" or die $!;
print $cf <<"EOC";
load_module $module;
$user
worker_processes 2;
error_log $prefix/logs/error.log notice;
pid $prefix/logs/nginx.pid;
thread_pool default threads=8;
env AISERVE_EXIT_DELAY_LOG;
env AISERVE_EXIT_DELAY_THREAD_MS;
env AISERVE_EXIT_DELAY_DLCLOSE_MS;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $prefix/client_body_temp;
    proxy_temp_path $prefix/proxy_temp;
    fastcgi_temp_path $prefix/fastcgi_temp;
    uwsgi_temp_path $prefix/uwsgi_temp;
    scgi_temp_path $prefix/scgi_temp;
    aiserve_model tiny $root/models/tiny-st-cls;
    server {
        listen 127.0.0.1:$port;
        location /v1/embeddings {
            aiserve_infer tiny api=openai;
        }
    }
}
EOC
close $cf;

my $delay_log = "$prefix/logs/exit-delay.log";
my $env = aiserve_sanitizer_env("$prefix/logs", $shim)
          . "AISERVE_EXIT_DELAY_LOG=$delay_log"
          . " AISERVE_EXIT_DELAY_THREAD_MS=100"
          . " AISERVE_EXIT_DELAY_DLCLOSE_MS=300";

sub slurp {
    open my $f, '<', $_[0] or return '';
    local $/;
    return <$f>;
}

sub master_pid {
    my $pid = slurp("$prefix/logs/nginx.pid");
    chomp $pid;
    return $pid;
}

# 48 embeddings, 16 at a time: the pool's threads all run the encoder
sub load {
    my ($what) = @_;
    my @req = map { {
        method => 'POST', uri => '/v1/embeddings',
        headers => ['Content-Type' => 'application/json'],
        body => qq({"model": "tiny", "input": ["exit test $_", "two"]}),
    } } 1 .. 48;
    my @res = aiserve_http_concurrent($port, \@req, 16, timeout => 60);
    my $ok = grep { ($_->{status} // 0) == 200 } @res;
    is($ok, 48, "$what: 48 embeddings answered");
}

# waits until no process of the worker's old generation is left
sub wait_gone {
    my ($pids, $seconds) = @_;
    my $until = time + $seconds;
    while (time < $until) {
        return 1 unless grep { kill 0, $_ } @$pids;
        sleep 0.05;
    }
    return 0;
}

sub workers_of {
    my ($master) = @_;
    my @pids = split ' ', `pgrep -P $master`;
    return \@pids;
}

sub start {
    system("$env $nginx -p $prefix/ -c $prefix/conf/nginx.conf"
           . " >>$prefix/logs/nginx.out 2>&1") == 0
        or BAIL_OUT("nginx did not start: " . slurp("$prefix/logs/error.log")
                    . slurp("$prefix/logs/nginx.out"));
    my $until = time + 30;
    sleep 0.05 until -s "$prefix/logs/nginx.pid" || time > $until;
}

for my $round (1 .. 3) {
    start();
    my $master = master_pid();
    load("round $round");

    # a reload: the old workers exit gracefully, the new ones serve
    my $old = workers_of($master);
    kill 'HUP', $master;
    ok(wait_gone($old, 30), "round $round: the old workers exited");
    load("round $round, after the reload");

    # graceful shutdown
    kill 'QUIT', $master;
    ok(wait_gone([$master], 30), "round $round: nginx stopped");
}

my $log = slurp("$prefix/logs/error.log");
my $delays = slurp($delay_log);
my $exits = () = $log =~ /\] \d+#\d+: exit$/mg;

ok($delays =~ /^pthread_exit$/m && $delays =~ /^dlclose$/m,
   'the window was opened: let-go pool threads and dlclose() delayed');
cmp_ok($exits, '>=', 12, "$exits workers logged \"exit\" (12 or more)");
is(join("\n", $log =~ /^.*exited on signal.*$/mg), '',
   'no worker exited on a signal');
is(join("\n", $log =~ /^.*\[(?:alert|emerg|crit)\].*$/mg), '',
   'no alert, crit or emerg in the error log');
is(aiserve_sanitizer_reports("$prefix/logs"), '', 'no sanitizer report');

File::Path::remove_tree($prefix) if Test::More->builder->is_passing;

done_testing();
