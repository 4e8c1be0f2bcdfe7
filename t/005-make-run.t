# `make run PORT=N` (tools/run.sh): the README's first command on another
# port.  Starts it as a user does, in a session of its own, until
# POST /v1/embeddings answers on that port with a MiniLM embedding; checks
# the printed hint names the port, then stops it as Ctrl-C does (SIGINT to
# the session) and checks the port is closed.  The fine-tuning routes of
# conf/aiserve.conf answer too: the Files API, the jobs and the fine-tuned
# models' locations ask for a key (401), /v1/models answers without one.  A PORT that is not a port
# number, or one already in use, is refused with a message.  Not a
# Test::Nginx suite: make run is the same in HUP mode, so it runs once.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_free_port);
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);

plan skip_all => 'make run does not depend on HUP mode'
    if $ENV{TEST_NGINX_USE_HUP};

my $root = "$FindBin::Bin/..";
my $log = "$FindBin::Bin/servroot-make-run-$$.log";
my $port = aiserve_free_port();

# start_run(@make_args) -> pid of a `make run` in its own session, output
# to $log
sub start_run {
    my @args = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        POSIX::setsid();
        open STDIN, '<', '/dev/null' or die $!;
        open STDOUT, '>', $log or die "$log: $!";
        open STDERR, '>&', \*STDOUT or die $!;
        chdir $root or die "$root: $!";
        # as from a shell, not as a child of the make running the tests
        delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL)};
        exec 'make', '--no-print-directory', 'run', @args or die "make: $!";
    }
    return $pid;
}

sub slurp {
    open my $f, '<', $_[0] or return '';
    local $/;
    return <$f>;
}

sub listening {
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $_[0],
                                 Proto => 'tcp') ? 1 : 0;
}

# wait_exit($pid, $seconds) -> exit status, or undef while it still runs
sub wait_exit {
    my ($pid, $seconds) = @_;
    my $until = time + $seconds;
    while (time < $until) {
        return $? if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.1;
    }
    return undef;
}

my $request = {
    method => 'POST', uri => '/v1/embeddings',
    headers => ['Content-Type' => 'application/json'],
    body => '{"input": "Hello world!", "model": "minilm"}',
};

# --- make run PORT=N answers on N ------------------------------------------
my $pid = start_run("PORT=$port");
my ($res, $exited);
my $until = time + 120;
while (time < $until) {
    $res = aiserve_http($port, $request, timeout => 10);
    last if ($res->{status} // 0) == 200;
    if (defined($exited = wait_exit($pid, 0.5))) {
        last;
    }
}
is($exited, undef, "make run PORT=$port keeps running")
    or diag slurp($log);
is($res->{status}, 200, "POST /v1/embeddings on port $port answers 200")
    or diag explain($res), slurp($log);
my $body = eval { JSON::PP::decode_json($res->{body} // '') } // {};
is(scalar @{ $body->{data}[0]{embedding} // [] }, 384,
   'the answer is a MiniLM embedding (384 floats)');

my $out = slurp($log);
like($out, qr{serving conf/aiserve\.conf on http://127\.0\.0\.1:$port\b},
     'make run says which port it serves');
like($out, qr{curl -s http://127\.0\.0\.1:$port/v1/embeddings},
     'the printed curl hint uses the port');

# --- the fine-tuning routes ----------------------------------------------------
for my $c (['GET', '/v1/files'], ['GET', '/v1/fine_tuning/jobs'],
           ['POST', '/ft/minilm'], ['POST', '/ft/tiny-cls']) {
    my $r = aiserve_http($port, {
        method => $c->[0], uri => $c->[1],
        headers => ['Content-Type' => 'application/json'],
        $c->[0] eq 'POST' ? (body => '{"inputs": "x"}') : () });
    my $e = eval { JSON::PP::decode_json($r->{body} // '') } // {};
    is("$r->{status} " . ($e->{error}{code} // '-'), '401 missing_api_key',
       "$c->[0] $c->[1]: served, for API keys (401 without one)");
}
my $models = aiserve_http($port, { method => 'GET', uri => '/v1/models' });
is($models->{status}, 200, 'GET /v1/models: 200 without a key (dry_run)');

# --- Ctrl-C stops it and frees the port ---------------------------------------
kill 'INT', -$pid;
my $status = wait_exit($pid, 30);
ok(defined $status, 'SIGINT to make run stops it within 30 s')
    or kill 'KILL', -$pid;
waitpid($pid, 0) unless defined $status;
ok(!listening($port), "port $port is closed after make run stopped");

# --- a port in use, a bad port ---------------------------------------------
{
    my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                     Proto => 'tcp', Listen => 1)
        or die "listen: $!";
    my $busy_port = $busy->sockport;
    my $p = start_run("PORT=$busy_port");
    my $st = wait_exit($p, 60);
    ok(defined $st && $st != 0, 'make run on a port in use fails');
    like(slurp($log), qr/127\.0\.0\.1:$busy_port is already in use/,
         'and says the port is in use');
    kill 'KILL', -$p unless defined $st;
}

for my $bad ('abc', '0', '65536', '80x') {
    my $p = start_run("PORT=$bad");
    my $st = wait_exit($p, 60);
    ok(defined $st && $st != 0, "make run PORT=$bad fails");
    like(slurp($log), qr/PORT=\Q$bad\E is not a port number/,
         "and says PORT=$bad is not a port number");
    kill 'KILL', -$p unless defined $st;
}

unlink $log;
done_testing();
