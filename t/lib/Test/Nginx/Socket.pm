package Test::Nginx::Socket;

# aiserve's own Test::Nginx-format runner.
#
# Debian does not package openresty's Test::Nginx, so this is a small,
# independent implementation of the subset of Test::Nginx::Socket's interface
# that aiserve's t/*.t files use, built on Debian's Test::Base.  The same .t
# files run unchanged under openresty's Test::Nginx::Socket
# (tools/test-with-openresty.sh checks that).  Supported functions, sections
# and environment variables are listed in t/README.md; behaviour follows
# openresty's documentation of the same names.

use strict;
use warnings;

use Test::Base -base;

use Cwd ();
use Digest::MD5 ();
use Digest::SHA ();
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use File::Basename ();
use File::Path ();
use File::Spec;
use IO::Select;
use IO::Socket::INET;
use List::Util ();
use POSIX ();
use Time::HiRes ();

our $VERSION = '0.1';

our @EXPORT = qw(
    run_tests repeat_each no_shuffle log_level master_on master_off
    master_process_enabled workers worker_connections no_long_string
    no_root_location add_block_preprocessor add_response_body_check
    timeout server_port server_port_for_client server_root html_dir
    env_to_nginx bail_out config_preamble
);


# --- settings: environment first, then the functions a .t file calls -----

my $repo_root = Cwd::abs_path(
    File::Basename::dirname(__FILE__) . '/../../../..');

our $NginxBinary  = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
our $ServerAddr   = '127.0.0.1';
our $ServerName   = 'localhost';
our $LogLevel     = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $Master       = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $Timeout      = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $Sleep        = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $UseHup       = $ENV{TEST_NGINX_USE_HUP};
our $NoShuffle    = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoClean      = $ENV{TEST_NGINX_NO_CLEAN};
our $Verbose      = $ENV{TEST_NGINX_VERBOSE};
our $LoadModules  = $ENV{TEST_NGINX_LOAD_MODULES};
our $Randomize    = $ENV{TEST_NGINX_RANDOMIZE};
our $UseValgrind  = $ENV{TEST_NGINX_USE_VALGRIND};
our $SanPreload   = $ENV{TEST_NGINX_SANITIZER_PRELOAD};
our $Workers      = 1;
our $WorkerConns  = 64;
our $RepeatEach   = 1;
our $NoLongString = 0;
our $NoRootLoc    = 0;
our $Preamble     = '';
our @EnvToNginx;
our @BlockPreprocessors;
our @ResponseBodyChecks;

our $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT}
                  || 1984;
our $ServRoot;

if ($Randomize) {
    $ServerPort = free_port();
    $ServRoot = File::Spec->rel2abs("t/servroot_$ServerPort");
} else {
    $ServRoot = $ENV{TEST_NGINX_SERVROOT}
                || File::Spec->rel2abs('t/servroot');
}

our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;

our $LogDir   = "$ServRoot/logs";
our $ErrLog   = "$LogDir/error.log";
our $AccLog   = "$LogDir/access.log";
our $PidFile  = "$LogDir/nginx.pid";
our $HtmlDir  = "$ServRoot/html";
our $ConfDir  = "$ServRoot/conf";
our $ConfFile = "$ConfDir/nginx.conf";

# Variables the blocks may refer to as $TEST_NGINX_*.  SERVER_ROOT is what
# openresty's runner sets; the others are set here and, for openresty's
# runner, by tools/test-with-openresty.sh.
if ($Randomize) {
    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
    $ENV{TEST_NGINX_SERVROOT} = $ServRoot;
}
$ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
$ENV{TEST_NGINX_SERVROOT} //= $ServRoot;
$ENV{TEST_NGINX_HTML_DIR} //= $HtmlDir;
$ENV{TEST_NGINX_AISERVE_ROOT} //= $repo_root;
$ENV{TEST_NGINX_AISERVE_MODULE} //=
    "$repo_root/build/ngx_http_aiserve_module.so";

# Runner state.
our $NginxPid;          # the master (or single process) we started
our $PrevConfig;        # config of the block now loaded
our $PrevBlock;         # block whose error log lines are being read
our $ErrLogPos = 0;     # error_log_lines() reads from here
our $ScanPos = 0;       # alert/emerg scan has read up to here
our $InChild = 0;       # set in a forked child: its END leaves nginx alone
our $RunnerPid = $$;    # only this process stops nginx at the end
our $ChildPid;          # nginx run in the foreground under valgrind
our %ValgrindPos;       # valgrind log file -> bytes already reported

sub repeat_each (@) { $RepeatEach = shift if @_; $RepeatEach }
sub no_shuffle () { $NoShuffle = 1 }
sub log_level (@) { $LogLevel = shift if @_; $LogLevel }
sub master_on () { $Master = 'on' }
sub master_off () { $Master = 'off' }
sub workers (@) { $Workers = shift if @_; $Workers }
sub worker_connections (@) { $WorkerConns = shift if @_; $WorkerConns }
sub no_long_string () { $NoLongString = 1 }
sub no_root_location () { $NoRootLoc = 1 }
sub timeout (@) { $Timeout = shift if @_; $Timeout }
sub server_port (@) { $ServerPort = shift if @_; $ServerPort }
sub server_port_for_client (@) {
    $ServerPortForClient = shift if @_;
    $ServerPortForClient;
}
sub server_root () { $ServRoot }
sub html_dir () { $HtmlDir }
sub config_preamble ($) { $Preamble = shift }

sub master_process_enabled (@) {
    $Master = $_[0] ? 'on' : 'off' if @_;
    $Master eq 'on';
}

sub env_to_nginx (@) {
    for my $v (@_) {
        croak "env_to_nginx: bad argument \"$v\"" if $v !~ /^[A-Za-z_]/;
        push @EnvToNginx, $v;
    }
}

sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }

# Called as $check->($block, $body, $req_idx, $repeated_req_idx, $dry_run)
# after each response, as openresty's runner does.
sub add_response_body_check ($) { push @ResponseBodyChecks, shift }

sub bail_out (@) {
    stop_nginx();
    Test::More::BAIL_OUT(join '', @_);
}


# --- helpers ---------------------------------------------------------------

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1)
        or die "cannot find a free port: $!\n";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub note_v { warn @_, "\n" if $Verbose }

# "5", "5s" and "500ms" in seconds.
sub parse_time {
    my $t = shift;
    return undef unless defined $t;
    $t =~ s/^\s+|\s+$//g;
    return $1 / 1000 if $t =~ /^([\d.]+)ms$/;
    return $1 if $t =~ /^([\d.]+)s?$/;
    return $t;
}

sub trim_value {
    my $v = shift;
    return undef unless defined $v;
    $v =~ s/^\s+|\s+$//g;
    return $v;
}

# $TEST_NGINX_FOO in a section becomes $ENV{TEST_NGINX_FOO}; an unset
# variable stops the file, as in openresty's runner.
sub expand_env {
    my ($text, $name) = @_;
    return $text unless defined $text && !ref $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        defined $ENV{$1} ? $ENV{$1}
                         : bail_out("$name - No environment $1 defined.\n")
    }ge;
    return $text;
}

sub one_line {
    my $s = shift;
    $s =~ s/\n\z//;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    $s =~ s/"/\\"/g;
    return $s;
}

# The element for request number $idx of a section that holds one value per
# request when several requests are sent.
sub indexed {
    my ($name, $value, $idx, $need_array) = @_;
    if (ref $value eq 'ARRAY') {
        return $value->[$idx] if $need_array || $idx == 0;
    } elsif (!$need_array) {
        return $value;
    }
    bail_out("$name - several requests are sent, so this section needs "
             . "one value per request (an array)");
}

sub read_pid {
    open my $in, '<', $PidFile or return undef;
    my $pid = <$in>;
    close $in;
    return undef unless defined $pid && $pid =~ /^\s*(\d+)\s*$/;
    return $1;
}

# A zombie counts as gone: the daemonized master's parent is init, which may
# reap it late.
sub alive {
    my $pid = shift;
    return 0 unless $pid && kill(0, $pid);
    open my $st, '<', "/proc/$pid/stat" or return 1;
    my $line = <$st> // '';
    return $line !~ /^\d+ \(.*\) Z/s;
}

sub is_nginx {
    my $pid = shift;
    open my $in, '<', "/proc/$pid/comm" or return 0;
    my $comm = <$in> // '';
    return $comm =~ /^(?:nginx|memcheck)/;
}

# Whether any process of nginx's process group (master and workers) is
# still alive.
sub group_alive {
    my $pgid = shift;
    return 0 unless kill(0, -$pgid);
    for my $dir (glob '/proc/[0-9]*') {
        open my $st, '<', "$dir/stat" or next;
        my $line = <$st> // '';
        my ($state, $pg) = $line =~ /\) (\S) \d+ (\d+)/;
        return 1 if defined $pg && $pg == $pgid && $state ne 'Z';
    }
    return 0;
}

# Stops the nginx this file started: QUIT (graceful), then KILL of its whole
# process group (master and workers) if it has not gone within the timeout.
sub stop_nginx {
    my $pid = $NginxPid // read_pid();
    # A pid file left by an earlier run may name a process that is no
    # longer nginx.
    undef $pid if !$NginxPid && $pid && !is_nginx($pid);
    undef $NginxPid;
    my $child = $ChildPid;
    undef $ChildPid;
    if ($pid && alive($pid)) {
        note_v("stopping nginx $pid");
        kill 'QUIT', $pid;
        my $wait = $UseValgrind ? 60 : 5;
        my $deadline = Time::HiRes::time() + ($Timeout > $wait ? $Timeout
                                                               : $wait);
        while (Time::HiRes::time() < $deadline) {
            waitpid($child, POSIX::WNOHANG()) if $child;
            last unless alive($pid) || group_alive($pid);
            Time::HiRes::sleep(0.02);
        }
        if (alive($pid) || group_alive($pid)) {
            warn "WARNING: nginx $pid did not quit in time; killing it\n";
            kill 'KILL', -$pid;
            kill 'KILL', $pid;
            Time::HiRes::sleep(0.05);
        }
    }
    if ($child && alive($child)) {
        kill 'KILL', -$child;
        kill 'KILL', $child;
    }
    waitpid($child, 0) if $child;
    unlink $PidFile;
}

sub write_file {
    my ($path, $data) = @_;
    open my $out, '>', $path or bail_out("cannot write $path: $!");
    binmode $out;
    print $out $data;
    close $out;
}


# --- server root and nginx.conf ---------------------------------------------

# A fresh server root; in HUP mode the running master keeps its logs and pid
# file, and only the html tree and the configuration are rewritten.
#
# The server root belongs to the runner: openresty's runner removes it for
# every block (and stops when something else is in it), or in HUP mode
# deletes every file in it, so a test's own files there break under it.
# Here they fail the file once (and are left alone).
my $foreign_reported;
sub setup_server_root {
    my ($keep_logs, $block) = @_;
    if (!$foreign_reported && opendir my $dh, $ServRoot) {
        my @foreign = sort grep {
            !/^\.\.?$/ && !/^(?:conf|html|logs|cache|\w+_temp|\w+_cache)$/
        } readdir $dh;
        if (@foreign) {
            $foreign_reported = 1;
            Test::More::fail(($block ? $block->name . " - " : '')
                . "$ServRoot holds @foreign, which is not the runner's: "
                . "openresty's runner removes the server root for every "
                . "block; keep a test's own files elsewhere (t/README.md)");
        }
    }
    %ValgrindPos = () unless $keep_logs;
    if (-d $ServRoot && !$keep_logs) {
        File::Path::remove_tree($ConfDir, $HtmlDir, $LogDir,
                                glob("$ServRoot/*_temp"));
    }
    if ($keep_logs) {
        File::Path::remove_tree($HtmlDir, $ConfDir);
    }
    File::Path::make_path($ServRoot, $LogDir, $HtmlDir, $ConfDir);
    write_file("$HtmlDir/index.html",
               "<html><head><title>It works!</title></head>"
               . "<body>It works!</body></html>");
}

# --- user_files: ">>> name" lines, each followed by that file's content;
# relative names are under the html directory.
sub write_user_files {
    my ($block) = @_;
    my $files = $block->user_files;
    return unless defined $files;
    my @files;
    if (ref $files eq 'ARRAY') {
        @files = @$files;
    } else {
        my $cur;
        for my $line (split /^/, $files) {
            if ($line =~ /^>>> (\S+)/) {
                $cur = [$1, ''];
                push @files, $cur;
            } elsif ($cur) {
                $cur->[1] .= $line;
            }
        }
    }
    for my $f (@files) {
        my ($fname, $body) = @$f;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        File::Path::make_path(File::Basename::dirname($path));
        write_file($path, expand_env($body // '', $block->name));
    }
}

sub write_config {
    my ($block, $config, $version) = @_;
    my $name = $block->name;

    my $main = expand_env($block->main_config // '', $name);
    if ($LoadModules) {
        $main = join('', map { "load_module $_;\n" } split ' ', $LoadModules)
                . $main;
    }
    my $http = expand_env($block->http_config // '', $name);
    my $post_main = expand_env($block->post_main_config // '', $name);
    $config //= '';

    my $master = $UseHup ? 'on' : $Master;
    my $daemon = $UseValgrind ? 'off' : 'on';
    my $env = join '', map { "env $_;\n" } @EnvToNginx;
    my $temps = join ' ',
        map { "${_}_temp_path $ServRoot/${_}_temp;" }
        grep { $http !~ /\b${_}_temp_path\b/ }
        qw(client_body proxy fastcgi uwsgi scgi);
    my $root_loc = $NoRootLoc ? '' : <<"EOC";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
EOC
    my $ver_server = !$version ? '' : <<"EOC";
    server {
        listen          $ServerAddr:$ServerPort;
        server_name     'Test-Nginx';
        location = /ver {
            return 200 '$version';
        }
    }
EOC
    my $user = $> == 0 ? "user root;\n" : '';

    write_file($ConfFile, <<"EOC");
worker_processes  $Workers;
daemon $daemon;
master_process $master;
error_log $ErrLog $LogLevel;
pid       $PidFile;
$env$user
$main

http {
    access_log $AccLog;
    $temps

    default_type text/plain;
    keepalive_timeout  68;

$http

    server {
        listen          $ServerAddr:$ServerPort;
        server_name     '$ServerName';
        client_max_body_size 30M;

$Preamble
$config

$root_loc    }
$ver_server}

$post_main

events {
    accept_mutex off;
    worker_connections  $WorkerConns;
}
EOC
}

# Runs the nginx command line once; returns its wait status.  The master
# daemonizes, so the command returns once the configuration is loaded and
# the listening sockets are open.
sub run_nginx {
    my $out = "$LogDir/nginx.out";
    my $cmd = "exec " . sanitizer_env() . "$NginxBinary -p $ServRoot/ -c $ConfFile -e $ErrLog"
              . " >$out 2>&1";
    note_v("running $cmd");
    system($cmd);
    return $?;
}

# Sanitizer mode (make test-asan): a module built with ASan and UBSan runs
# in the uninstrumented /usr/sbin/nginx with the runtimes in
# TEST_NGINX_SANITIZER_PRELOAD preloaded into nginx alone (not into this
# runner or the tools it runs), their options from TEST_NGINX_ASAN_OPTIONS
# and TEST_NGINX_UBSAN_OPTIONS, each process's reports in
# logs/asan.PID and logs/ubsan.PID, read by scan_valgrind().
sub sanitizer_env {
    return '' unless $SanPreload;
    my %opt = (ASAN_OPTIONS => $ENV{TEST_NGINX_ASAN_OPTIONS},
               UBSAN_OPTIONS => $ENV{TEST_NGINX_UBSAN_OPTIONS});
    my $env = "env LD_PRELOAD='$SanPreload'";
    for my $k (sort keys %opt) {
        my $log = $k eq 'ASAN_OPTIONS' ? 'asan' : 'ubsan';
        $env .= " $k='" . join(':', grep { defined && length } $opt{$k},
                               "log_path=$LogDir/$log") . "'";
    }
    return "$env ";
}

# Valgrind mode: nginx runs in the foreground (daemon off) as our child under
# memcheck, each process logging to logs/valgrind.PID.log.  A number in
# TEST_NGINX_USE_VALGRIND selects the default options, anything else is
# taken as valgrind's options.
sub spawn_nginx_under_valgrind {
    my $out = "$LogDir/nginx.out";
    my $opts = $UseValgrind =~ /^\d+$/
        ? "--tool=memcheck --leak-check=full --show-possibly-lost=no"
          . " --num-callers=50 --gen-suppressions=all"
        : $UseValgrind;
    if ($UseValgrind =~ /^\d+$/) {
        my $own = File::Basename::dirname(__FILE__) . '/valgrind-nginx.supp';
        $opts .= " --suppressions=$_"
            for grep { -f } $own, "$repo_root/valgrind.suppress";
    }
    my $cmd = "exec valgrind -q $opts --log-file=$LogDir/valgrind.%p.log"
              . " $NginxBinary -p $ServRoot/ -c $ConfFile -e $ErrLog"
              . " >$out 2>&1";
    note_v("running $cmd");
    my $pid = fork // bail_out("fork: $!");
    if ($pid == 0) {
        $InChild = 1;
        POSIX::setpgid(0, 0);
        exec('/bin/sh', '-c', $cmd) or POSIX::_exit(127);
    }
    $ChildPid = $pid;
}

sub start_nginx {
    my ($block) = @_;
    my $name = $block->name;
    my $deadline = Time::HiRes::time() + 10;
    my $status;
    while (1) {
        if ($UseValgrind) {
            spawn_nginx_under_valgrind();
            $status = 0;
        } else {
            $status = run_nginx();
        }
        last if $status == 0;
        my $log = slurp("$LogDir/nginx.out");
        if ($log !~ /Address already in use/ || Time::HiRes::time() > $deadline) {
            bail_out("$name - cannot start nginx (status $status): $log");
        }
        Time::HiRes::sleep(0.2);
    }
    my $wait = Time::HiRes::time() + ($UseValgrind ? 60 : 5);
    while (Time::HiRes::time() < $wait) {
        $NginxPid = read_pid();
        last if $NginxPid;
        if ($ChildPid && waitpid($ChildPid, POSIX::WNOHANG()) == $ChildPid) {
            undef $ChildPid;
            bail_out("$name - nginx exited under valgrind (status $?): "
                     . slurp("$LogDir/nginx.out"));
        }
        Time::HiRes::sleep(0.02);
    }
    bail_out("$name - nginx started but wrote no pid file") unless $NginxPid;
    Time::HiRes::sleep($Sleep);
}

sub slurp {
    my $f = shift;
    open my $in, '<', $f or return '';
    local $/;
    my $d = <$in>;
    return $d // '';
}

# HUP mode: load the block's configuration into the running master, wait
# until the new generation answers with the new configuration's version, and
# then until the old generation's processes have exited: the master lets
# both generations accept for a while (100 ms in nginx 1.22) before it tells
# the old one to shut down.
sub reload_nginx {
    my ($block, $version) = @_;
    my $name = $block->name;
    my @old = children_of($NginxPid);
    my $log_from = -s $ErrLog // 0;
    note_v("reloading nginx $NginxPid (old workers: @old)");
    kill 'HUP', $NginxPid or bail_out("$name - cannot send HUP: $!");
    Time::HiRes::sleep($Sleep * 3);
    my ($ok, $tries) = (0, 0);
    while ($ok < 3) {
        my $got = version_of_running();
        if (defined $got && $got eq $version) {
            $ok++;
            next;
        }
        $ok = 0;
        my ($emerg) = grep { /\[emerg\]/ } log_lines_from($log_from);
        if ($emerg || ++$tries > 200) {
            Test::More::fail("$name - nginx did not load the new "
                             . "configuration after HUP"
                             . ($emerg ? ": " . one_line($emerg) : ''));
            return;
        }
        Time::HiRes::sleep($tries < 10 ? $Sleep * $tries : 0.1);
    }
    my $deadline = Time::HiRes::time() + ($Timeout > 10 ? $Timeout : 10);
    while (grep { alive($_) } @old) {
        if (Time::HiRes::time() > $deadline) {
            Test::More::fail("$name - the old generation's processes "
                             . join(' ', grep { alive($_) } @old)
                             . " did not exit after HUP");
            return;
        }
        Time::HiRes::sleep(0.01);
    }
}

sub children_of {
    my ($ppid) = @_;
    my @kids;
    for my $dir (glob '/proc/[0-9]*') {
        open my $st, '<', "$dir/stat" or next;
        my $line = <$st> // '';
        my ($pid, $state, $parent) = $line =~ /^(\d+) \(.*\) (\S) (\d+)/s
            or next;
        push @kids, $pid if $parent == $ppid && $state ne 'Z';
    }
    return @kids;
}

sub log_lines_from {
    my ($pos) = @_;
    open my $in, '<', $ErrLog or return;
    seek $in, $pos, 0;
    return <$in>;
}

sub version_of_running {
    my $raw = http_exchange(
        [{ value => "GET /ver HTTP/1.1\r\nHost: Test-Nginx\r\n"
                    . "Connection: close\r\n\r\n" }],
        1, undef, 1);
    return undef unless defined $raw && $raw =~ m{^HTTP/1\.\d 200 };
    my ($res) = parse_response($raw, 0);
    return $res && $res->{body};
}


# --- the error log ------------------------------------------------------------

sub error_log_lines {
    Time::HiRes::sleep($Sleep * 3);
    open my $in, '<', $ErrLog or return [];
    seek $in, $ErrLogPos, 0;
    my @lines = <$in>;
    $ErrLogPos = tell $in;
    close $in;
    return \@lines;
}

sub mentions {
    my ($pats, $what) = @_;
    return 0 unless defined $pats;
    return index($pats, $what) >= 0 if !ref $pats;
    return "$pats" =~ /\Q$what\E/ if ref $pats eq 'Regexp';
    return scalar grep { defined && mentions($_, $what) } @$pats;
}

# Fails when [alert] or [emerg] lines (or a failed assertion) appeared in the
# error log since the last scan, unless $block expects them: its error_log
# names "[alert" / "[emerg", or it is a must_die block (emerg only).
sub scan_alerts {
    my ($block, $why) = @_;
    return unless $block;
    open my $in, '<', $ErrLog or return;
    my $size = -s $in;
    $ScanPos = 0 if $size < $ScanPos;
    seek $in, $ScanPos, 0;
    my @lines = <$in>;
    $ScanPos = tell $in;
    close $in;
    my $expected = $block->error_log;
    my $ok_alert = mentions($expected, '[alert');
    my $ok_emerg = mentions($expected, '[emerg') || defined $block->must_die;
    for my $line (@lines) {
        next unless ($line =~ /\[alert\]/ && !$ok_alert)
                    || ($line =~ /\[emerg\]/ && !$ok_emerg)
                    || $line =~ /\bAssertion .*?failed\b/;
        Test::More::fail($block->name . " - error.log $why: " . one_line($line));
    }
    scan_valgrind($block, $why);
}

# Fails on what valgrind logged (with -q, only errors and leaks) or the
# sanitizers reported since the last scan, attributed to $block.
sub scan_valgrind {
    my ($block, $why) = @_;
    return unless ($UseValgrind || $SanPreload) && $block;
    my $reported = 0;
    for my $f (sort glob "$LogDir/valgrind.*.log $LogDir/asan.* "
                         . "$LogDir/ubsan.*") {
        open my $in, '<', $f or next;
        seek $in, $ValgrindPos{$f} // 0, 0;
        my $text = do { local $/; <$in> } // '';
        $ValgrindPos{$f} = tell $in;
        next unless $text =~ /\S/;
        $reported++;
        my @lines = split /\n/, $text;
        splice @lines, 60, @lines - 60, '...' if @lines > 60;
        Test::More::fail($block->name . " - valgrind or a sanitizer reported"
                         . " errors $why ($f)");
        Test::More::diag(join "\n", @lines);
    }
    return unless $SanPreload;
    # a report a process wrote to its stderr, which is the error log (the
    # preloaded t/shim/ubsan_log_path.c sends UBSan's to its log_path; a
    # run without it leaves them there)
    open my $in, '<', $ErrLog or return;
    seek $in, $ValgrindPos{$ErrLog} // 0, 0;
    my @lines = <$in>;
    $ValgrindPos{$ErrLog} = tell $in;
    my @bad = grep { /runtime error: |ERROR: (?:Address|Leak)Sanitizer/ }
              @lines;
    if (@bad) {
        Test::More::fail($block->name . " - a sanitizer reported errors $why"
                         . " ($ErrLog)");
        Test::More::diag(join '', @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
    }
    # A sanitizer ends a process with code 1 after its report, which may
    # have gone where nothing here reads it; nginx's workers exit with 0,
    # or 2 when their start failed.
    my @died = grep { /worker process \d+ exited with code 1\b/ } @lines;
    return unless @died;
    Test::More::fail($block->name . " - a worker exited with code 1 $why,"
                     . " as a sanitizer ends one after its report"
                     . ($reported || @bad ? ''
                        : " (no report found in $LogDir or $ErrLog)"));
    Test::More::diag(join '', @died[0 .. ($#died < 4 ? $#died : 4)]);
}

sub pattern_matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ $pat : index($line, $pat) >= 0;
}

sub pattern_list {
    my $pats = shift;
    return [$pats] if ref $pats eq 'Regexp';
    return [@$pats] if ref $pats eq 'ARRAY';
    chomp(my $p = $pats);
    return [grep { length } split /\n+/, $p];
}

# error_log, no_error_log and grep_error_log checks over the error log lines
# written since the previous call.
sub check_error_log {
    my ($block, $repeat_idx) = @_;
    my $name = $block->name;
    my $lines;

    my $grep = $block->grep_error_log;
    if (defined $grep) {
        $grep = $grep->[$repeat_idx] if ref $grep eq 'ARRAY';
        my $expected = $block->grep_error_log_out;
        bail_out("$name - --- grep_error_log needs --- grep_error_log_out")
            unless defined $expected;
        $expected = $expected->[$repeat_idx] if ref $expected eq 'ARRAY';
        $expected = expand_env($expected, $name);
        $lines ||= error_log_lines();
        my $got = '';
        for my $line (@$lines) {
            my $m;
            if (ref $grep) {
                $m = $& if $line =~ $grep;
            } elsif (index($line, $grep) >= 0) {
                $m = $grep;
            }
            $got .= "$m\n" if defined $m && $m !~ /\n/;
        }
        if (ref $expected eq 'Regexp') {
            Test::More::like($got, $expected,
                             "$name - grep_error_log_out (req $repeat_idx)");
        } else {
            is_str($got, $expected,
                   "$name - grep_error_log_out (req $repeat_idx)");
        }
    } elsif (defined $block->grep_error_log_out) {
        bail_out("$name - --- grep_error_log_out needs --- grep_error_log");
    }

    if (defined $block->error_log) {
        my $pats = pattern_list($block->error_log);
        $lines ||= error_log_lines();
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next unless defined $pat && pattern_matches($line, $pat);
                Test::More::pass("$name - pattern \"$pat\" matches a line "
                                 . "in error.log (req $repeat_idx)");
                undef $pat;
            }
        }
        for my $pat (grep { defined } @$pats) {
            Test::More::fail("$name - pattern \"$pat\" should match a line "
                             . "in error.log (req $repeat_idx)");
        }
    }

    if (defined $block->no_error_log) {
        my $pats = pattern_list($block->no_error_log);
        $lines ||= error_log_lines();
        my %found;
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next unless pattern_matches($line, $pat);
                $found{$pat}++;
                Test::More::fail("$name - pattern \"" . one_line("$pat")
                    . "\" should not match any line in error.log but "
                    . "matches line \"" . one_line($line)
                    . "\" (req $repeat_idx)");
            }
        }
        for my $pat (grep { !$found{$_} } @$pats) {
            Test::More::pass("$name - pattern \"" . one_line("$pat")
                . "\" does not match a line in error.log (req $repeat_idx)");
        }
    }
}

sub is_str {
    my ($got, $expected, $desc) = @_;
    if ($NoLongString || !defined $got || !defined $expected
        || (length($got) < 200 && length($expected) < 200))
    {
        return Test::More::is($got, $expected, $desc);
    }
    return 1 if Test::More::ok($got eq $expected, $desc);
    my $at = 0;
    $at++ while substr($got, $at, 1) eq substr($expected, $at, 1);
    my $from = $at > 20 ? $at - 20 : 0;
    Test::More::diag(sprintf(
        "strings differ at char %d (lengths %d and %d)\n"
        . "         got: \"%s\"\n    expected: \"%s\"",
        $at, length $got, length $expected,
        one_line(substr($got, $from, 60)),
        one_line(substr($expected, $from, 60))));
    return 0;
}


# --- requests ---------------------------------------------------------------

# Headers from --- more_headers: "Name: value" lines; lines starting with
# "#" are comments.
sub parse_more_headers {
    my $in = shift // '';
    my ($out, $chunked) = ('', 0);
    for my $h (split /\n+/, $in) {
        next if $h =~ /^\s*#/;
        my ($k, $v) = split /:\s*/, $h, 2;
        $v //= '';
        $chunked = 1 if lc $k eq 'transfer-encoding' && $v eq 'chunked';
        $out .= "$k: $v\r\n";
    }
    return ($out, $chunked);
}

# Turns the text of one --- request ("METHOD [URI [VERSION]]" on the first
# line, the body on the following lines) into the bytes sent.  The packets
# of a request given as an array keep their boundaries in the body; a cut
# before the body moves to the end of the headers.
sub build_request {
    my ($name, $packets, $more, $conn) = @_;
    my ($hdrs, $chunked) = parse_more_headers($more);
    my $text = join '', @$packets;
    my ($line, $body) = $text =~ /\A([^\n]*\n?)(.*)\z/s;
    my ($meth, $uri, $ver) = grep { length } split /\s+/, $line;
    bail_out("$name - request line should be non-empty") unless defined $meth;
    $uri //= '/';
    $ver //= 'HTTP/1.1';

    my $body_start = length $line;
    my $lead = 0;
    if (!$chunked && length $body && $hdrs !~ /(?:^|\n)Content-Length:/i) {
        ($lead) = map { length } $body =~ /\A(\s*)/;
        $body =~ s/^\s+|\s+$//g;
        $hdrs .= "Content-Length: " . length($body) . "\r\n";
    }
    my $head = "$meth $uri $ver\r\n";
    $head .= "Host: $ServerName\r\n" if $hdrs !~ /(?:^|\n)Host:/i;
    $head .= "Connection: $conn\r\n" if $hdrs !~ /(?:^|\n)Connection/i;
    $head .= "$hdrs\r\n";

    return [$head . $body] if @$packets == 1;

    # Cut the body where the original packets were cut.
    my @out;
    my $pos = 0;
    for my $p (@$packets[0 .. $#$packets - 1]) {
        $pos += length $p;
        my $off = $pos - $body_start - $lead;
        $off = 0 if $off < 0;
        $off = length $body if $off > length $body;
        push @out, $off;
    }
    my @res;
    my $prev = 0;
    my $first = 1;
    for my $off (@out, length $body) {
        my $piece = substr($body, $prev, $off - $prev);
        push @res, $first ? $head . $piece : $piece;
        $first = 0;
        $prev = $off;
    }
    return \@res;
}

# Returns a list of requests; each is a list of packets, each packet
# {value => bytes, delay_before => seconds}.
sub requests_of_block {
    my ($block) = @_;
    my $name = $block->name;
    my $more = $block->more_headers // '';
    my $more_for = sub {
        my $i = shift;
        return $more unless ref $more eq 'ARRAY';
        bail_out("$name - --- more_headers lacks data for request $i")
            unless defined $more->[$i];
        return $more->[$i];
    };

    if (defined $block->raw_request) {
        my $raw = $block->raw_request;
        return [[map { { value => $_ } } ref $raw ? @$raw : ($raw)]];
    }

    if (my $reqs = $block->pipelined_requests) {
        bail_out("$name - --- pipelined_requests needs an array")
            unless ref $reqs eq 'ARRAY';
        my $all = '';
        for my $i (0 .. $#$reqs) {
            my $r = expand_env($reqs->[$i], $name);
            my $conn = $i == $#$reqs ? 'close' : 'keep-alive';
            $all .= build_request($name, [$r], $more_for->($i), $conn)->[0];
        }
        return [[{ value => $all }]];
    }

    my $req = $block->request;
    bail_out("$name - no --- request") unless defined $req;
    if (!ref $req) {
        $req =~ s/\A(?:\s*#[^\n]*\n|\s+)+//;
        return [[{ value => build_request($name, [$req], $more_for->(0),
                                          'close')->[0] }]];
    }
    bail_out("$name - --- request must be a string or an array")
        unless ref $req eq 'ARRAY';

    my @list;
    for my $i (0 .. $#$req) {
        my $one = $req->[$i];
        if (!ref $one) {
            push @list, [{ value => build_request($name, [$one],
                                                  $more_for->($i),
                                                  'close')->[0] }];
            next;
        }
        bail_out("$name - request $i must be a string or an array of "
                 . "packets") unless ref $one eq 'ARRAY';
        my @pk = map { ref $_ eq 'HASH' ? $_ : { value => $_ } } @$one;
        my $bytes = build_request($name, [map { $_->{value} } @pk],
                                  $more_for->($i), 'close');
        push @list, [map { { %{ $pk[$_] }, value => $bytes->[$_] } }
                     0 .. $#pk];
    }
    return \@list;
}

# Sends the packets of one request over a fresh TCP connection and reads
# until the server closes it or the timeout passes (which fails a test
# unless $quiet or the block has --- abort).  Returns the bytes read, or
# undef when it cannot connect (failing a test unless $quiet).
sub http_exchange {
    my ($packets, $timeout, $middle_delay, $quiet, $block) = @_;
    local $SIG{PIPE} = 'IGNORE';    # a server may close before the body
    my $sock;
    for my $try (1 .. 50) {
        $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr,
                                      PeerPort => $ServerPortForClient,
                                      Proto => 'tcp', Timeout => $timeout);
        last if $sock;
        Time::HiRes::sleep($try < 10 ? 0.01 * $try : 0.1);
    }
    if (!$sock) {
        return undef if $quiet;
        Test::More::fail(($block ? $block->name : '')
                         . " - cannot connect to $ServerAddr:"
                         . "$ServerPortForClient: $!");
        return undef;
    }
    $sock->blocking(0);
    my $sel = IO::Select->new($sock);
    my @todo = @$packets;
    my ($resp, $buf, $wbuf, $woff) = ('', '', undef, 0);
    my $deadline = Time::HiRes::time() + $timeout;
    my $write_done = 0;
    my $timed_out = 0;

    while (1) {
        if (!$write_done && (!defined $wbuf || $woff >= length $wbuf)) {
            my $p = shift @todo;
            if (!$p) {
                $write_done = 1;
                if ($block && defined $block->shutdown) {
                    shutdown($sock, 1);
                }
            } else {
                my $delay = $p->{delay_before} // ($wbuf ? $middle_delay : 0);
                Time::HiRes::sleep($delay) if $delay;
                ($wbuf, $woff) = ($p->{value}, 0);
                $deadline = Time::HiRes::time() + $timeout if $delay;
            }
        }
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) {
            $timed_out = 1;
            last;
        }
        my ($r, $w) = IO::Select->select($sel, $write_done ? undef : $sel,
                                         undef, $left);
        if ($w && @$w) {
            my $n = syswrite($sock, $wbuf, length($wbuf) - $woff, $woff);
            if (defined $n) {
                $woff += $n;
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                $write_done = 1;   # the server may have answered already
            }
        }
        if ($r && @$r) {
            my $n = sysread($sock, $buf, 65536);
            if (defined $n && $n == 0) {
                last;
            } elsif (defined $n) {
                $resp .= $buf;
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                last;
            }
        }
    }
    close $sock;
    if ($timed_out && !$quiet && !($block && defined $block->abort)) {
        Test::More::fail("ERROR: client socket timed out - "
                         . ($block ? $block->name : ''));
    }
    return $resp;
}

# Parses one HTTP/1.x response at the start of $raw: returns the response
# ({code, status_line, headers => [[name, value], ...], raw_headers, body})
# and the bytes after it.  Chunked bodies are decoded; a body without length
# runs to the end of the data.
sub parse_response {
    my ($raw, $head_req) = @_;
    my %res = (code => undef, headers => [], raw_headers => '', body => '');
    return (\%res, '') unless $raw =~ /\A(.*?\r?\n)\r?\n/s;
    my $head = $1;
    my $rest = substr($raw, length($&));
    $res{raw_headers} = $head;
    my @lines = split /\r?\n/, $head;
    my $status = shift @lines;
    $res{code} = $1 if $status =~ m{^HTTP/\d\.\d\s+(\d{3})};
    for my $l (@lines) {
        if ($l =~ /^[ \t]/ && @{ $res{headers} }) {
            $res{headers}[-1][1] .= " " . trim_value($l);
        } elsif ($l =~ /^([^:]+):\s*(.*?)\s*$/) {
            push @{ $res{headers} }, [$1, $2];
        }
    }
    my $code = $res{code} // 0;
    if ($head_req || $code == 304 || $code == 204 || $code == 101
        || ($code >= 100 && $code < 200))
    {
        return (\%res, $rest);
    }
    my $te = header_of(\%res, 'Transfer-Encoding');
    my $len = header_of(\%res, 'Content-Length');
    if (defined $te && $te =~ /chunked/i) {
        my $body = '';
        while (1) {
            if ($rest !~ s/\A([0-9A-Fa-f]+)[ \t]*(?:;[^\r\n]*)?\r\n//) {
                $res{bad_chunked} = 1;
                last;
            }
            my $n = hex $1;
            if ($n == 0) {
                $rest =~ s/\A(?:[^\r\n]+\r\n)*\r\n//
                    or $res{bad_chunked} = 1;
                last;
            }
            if (length $rest < $n + 2) {
                $res{bad_chunked} = 1;
                $body .= $rest;
                $rest = '';
                last;
            }
            $body .= substr($rest, 0, $n);
            $rest = substr($rest, $n + 2);
        }
        $res{body} = $body;
    } elsif (defined $len && $len =~ /^\d+$/) {
        $res{body} = substr($rest, 0, $len);
        $res{truncated} = length $rest < $len;
        $rest = length $rest > $len ? substr($rest, $len) : '';
    } else {
        $res{body} = $rest;
        $rest = '';
    }
    return (\%res, $rest);
}

# A header's value; repeated headers are joined with ", ".
sub header_of {
    my ($res, $name) = @_;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $res->{headers} };
    return @v ? join(', ', @v) : undef;
}


# --- checks on one response -----------------------------------------------------

sub check_response {
    my ($block, $res, $idx, $repeat_idx, $need_array) = @_;
    my $name = $block->name;

    if (defined $block->error_code_like) {
        my $v = indexed($name, $block->error_code_like, $idx, $need_array);
        Test::More::like($res->{code} // '', qr/$v/sm,
                         "$name - status code ok");
    } else {
        my $want = defined $block->error_code
            ? indexed($name, $block->error_code, $idx, $need_array) : 200;
        Test::More::is($res->{code} // '', $want, "$name - status code ok");
    }

    for my $which (qw(like unlike)) {
        my $section = "raw_response_headers_$which";
        my $pat = $block->$section;
        next unless defined $pat;
        $pat = indexed($name, $pat, $idx, $need_array);
        my $f = $which eq 'like' ? \&Test::More::like : \&Test::More::unlike;
        $f->($res->{raw_headers}, qr/$pat/s,
             "$name - raw resp headers $which");
    }

    if (defined $block->response_headers) {
        for my $h (header_lines(indexed($name, $block->response_headers,
                                        $idx, $need_array)))
        {
            my ($key, $val) = @$h;
            if (!defined $val) {
                Test::More::unlike($res->{raw_headers},
                    qr/^\s*\Q$key\E\s*:/ms,
                    "$name - header $key not present in the raw headers");
                next;
            }
            $val =~ s/\$ServerPort\b/$ServerPort/g;
            $val =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
            Test::More::is(header_of($res, $key) // '', $val,
                           "$name - header $key ok");
        }
    } elsif (defined $block->response_headers_like) {
        for my $h (header_lines(indexed($name, $block->response_headers_like,
                                        $idx, $need_array)))
        {
            my ($key, $val) = @$h;
            Test::More::like(header_of($res, $key) // '', qr/^$val$/,
                             "$name - header $key like ok");
        }
    }

    my $filters = $block->response_body_filters;
    if (defined $filters) {
        $filters = [split ' ', $filters] unless ref $filters;
        $filters = [$filters] if ref $filters eq 'CODE';
        for my $f (@$filters) {
            my $b = $res->{body};
            $res->{body} = ref $f eq 'CODE' ? $f->($b)
                         : $f eq 'uc' ? uc $b
                         : $f eq 'lc' ? lc $b
                         : $f eq 'ucfirst' ? ucfirst $b
                         : $f eq 'lcfirst' ? lcfirst $b
                         : $f eq 'length' ? length $b
                         : $f eq 'md5_hex' ? Digest::MD5::md5_hex($b)
                         : $f eq 'sha1_hex' ? Digest::SHA::sha1_hex($b)
                         : bail_out("$name - unknown response_body_filters "
                                    . "entry \"$f\"");
        }
    }

    my $body = $res->{body};
    if (defined $block->response_body) {
        my $want = indexed($name, $block->response_body, $idx, $need_array);
        my $desc = "$name - response_body - response is expected "
                   . "(repeated req $repeat_idx, req $idx)";
        if (ref $want) {
            Test::More::like($body, $want, $desc);
        } else {
            if (defined $want) {
                $want =~ s/\$ServerPort\b/$ServerPort/g;
                $want =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
                $want = expand_env($want, $name);
            }
            is_str($body, $want, $desc);
        }
    } elsif (defined $block->response_body_like
             || defined $block->response_body_unlike)
    {
        my $like = defined $block->response_body_like;
        my $pat = indexed($name, $like ? $block->response_body_like
                                       : $block->response_body_unlike,
                          $idx, $need_array);
        $pat =~ s/\$ServerPort\b/$ServerPort/g unless ref $pat;
        my $summary = trim_value($body // '');
        $summary =~ s/\s+/ /g;
        $summary = substr($summary, 0, 80) . '...' if length $summary > 80;
        my $f = $like ? \&Test::More::like : \&Test::More::unlike;
        $f->($body, qr/$pat/s, "$name - response_body_"
             . ($like ? 'like' : 'unlike') . " - response is expected "
             . "($summary)");
    }

    for my $check (@ResponseBodyChecks) {
        $check->($block, $body, $idx, $repeat_idx, 0);
    }
}

# "Name: value" lines of --- response_headers; "!Name" asks for absence
# (value undef).
sub header_lines {
    my $text = shift // '';
    my @out;
    for my $l (split /\n/, $text) {
        $l =~ s/^\s+|\s+$//g;
        next unless length $l;
        if ($l =~ s/^!\s*//) {
            push @out, [$l, undef];
        } else {
            my ($k, $v) = split /\s*:\s*/, $l, 2;
            push @out, [$k, $v // ''];
        }
    }
    return @out;
}


# --- one block -------------------------------------------------------------------

sub skip_count {
    my ($block) = @_;
    my $name = $block->name;
    if (defined(my $spec = $block->skip_nginx)) {
        $spec =~ m{^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)
                   (?:\s*:\s*(.*?))?\s*$}x
            or bail_out("$name - invalid --- skip_nginx: $spec");
        my ($n, $op, $want) = ($1, $2, sprintf("%d.%03d%03d", $3, $4, $5));
        my $reason = $6 || "nginx version $op $3.$4.$5";
        my $have = nginx_version();
        return ($n, $reason) if eval "$have $op $want";
    }
    if (defined(my $spec = $block->skip_eval)) {
        $spec =~ /^\s*(\d+)\s*:\s*(.*)/s
            or bail_out("$name - invalid --- skip_eval: $spec");
        my ($n, $code) = ($1, $2);
        my $skip = eval $code;
        bail_out("$name - skip_eval failed: $@") if $@;
        return ($n, 'skip_eval') if $skip;
    }
    return;
}

my $nginx_version;
sub nginx_version {
    return $nginx_version if defined $nginx_version;
    my $out = `$NginxBinary -V 2>&1`;
    $out =~ m{nginx/(\d+)\.(\d+)\.(\d+)}
        or bail_out("cannot run \"$NginxBinary -V\": $out");
    return $nginx_version = sprintf("%d.%03d%03d", $1, $2, $3);
}

my $first_start = 1;

sub run_must_die {
    my ($block, $config) = @_;
    my $name = $block->name;
    my $want = trim_value($block->must_die);
    for my $i (0 .. $RepeatEach - 1) {
        stop_nginx();
        scan_alerts($PrevBlock, 'while the previous block ran or stopped');
        if ($i == 0) {
            setup_server_root(0, $block);
            write_user_files($block);
            write_config($block, $config, undef);
            $ErrLogPos = $ScanPos = 0;
        }
        $PrevBlock = $block;
        my $status = run_nginx();
        my $code = $status >> 8;
        if ($status & 127 && ($status & 127) != POSIX::SIGTERM()) {
            Test::More::fail("$name - nginx crashed (status $status)");
        } elsif (length $want && $want =~ /^\d+$/) {
            Test::More::is($code, $want,
                           "$name - die with the expected exit code");
        } else {
            Test::More::isnt($status, 0, "$name - die as expected");
        }
        check_error_log($block, $i);
        if ($status == 0) {
            warn "WARNING: $name - nginx must die but it does not; "
                 . "killing it\n";
            Time::HiRes::sleep(0.1);
            $NginxPid = read_pid();
            stop_nginx();
        }
    }
    scan_alerts($block, 'while nginx failed to start');
    undef $PrevConfig;
}

# Sections of openresty's runner that this one does not implement.  A block
# using one stops the file instead of silently passing without the check.
my %unsupported = map { $_ => 1 } qw(
    access_log no_access_log shutdown_error_log no_shutdown_error_log
    stap stap_out stap_out_like stap_out_unlike
    tcp_listen tcp_reply tcp_query tcp_query_len tcp_reply_delay
    tcp_shutdown tcp_shutdown_delay tcp_no_close tcp_query_auto_timeout
    udp_listen udp_reply udp_query udp_reply_delay
    response_body_json_sort http2 http3 http09 curl curl_options
    curl_protocol curl_error server_name server_addr_for_client charset
    write_resp_body_file post_setup_server_root reload_fails todo
    todo_nginx skip_openssl skip_slave skip_nginx2 error_log_file
    request_eval response_body_eval
);

sub run_block {
    my ($block) = @_;
    my $name = $block->name;
    return if defined $block->SKIP;

    my @bad = grep { exists $block->{$_} } sort keys %unsupported;
    bail_out("$name - --- @bad: not supported by aiserve's runner "
             . "(t/lib/Test/Nginx/Socket.pm; see t/README.md)") if @bad;

    my $config = expand_env(scalar $block->config, $name);
    local $LogLevel = trim_value(scalar $block->log_level) || $LogLevel;

    if (defined $block->must_die) {
        local $UseHup;
        local $UseValgrind;
        return run_must_die($block, $config);
    }

    my ($skip, $reason) = skip_count($block);
    if ($skip) {
        for (1 .. $RepeatEach) {
            SKIP: { Test::More::skip("$name - $reason", $skip) }
        }
        return;
    }

    if (defined $config) {
        my $version = $UseHup ? sprintf("%08x", int rand 0xffffffff) : undef;
        if ($UseHup && !$first_start && $NginxPid && alive($NginxPid)) {
            scan_alerts($PrevBlock, 'while the previous block ran');
            setup_server_root(1, $block);
            write_user_files($block);
            write_config($block, $config, $version);
            $ErrLogPos = -s $ErrLog // 0;
            $ScanPos = $ErrLogPos;
            $PrevBlock = $block;
            reload_nginx($block, $version);
        } else {
            stop_nginx();    # the previous block's, or an earlier run's
            scan_alerts($PrevBlock, 'while the previous block ran '
                        . 'or stopped');
            setup_server_root(0, $block);
            write_user_files($block);
            write_config($block, $config, $version);
            $ErrLogPos = $ScanPos = 0;
            $PrevBlock = $block;
            start_nginx($block);
            $first_start = 0;
        }
        $PrevConfig = $config;
    } elsif (!defined $PrevConfig) {
        bail_out("$name - no --- config section and no previous one");
    } else {
        scan_alerts($PrevBlock, 'while the previous block ran');
        $PrevBlock = $block;
        $ErrLogPos = $ScanPos = -s $ErrLog // 0;
    }

    if (defined(my $init = $block->init)) {
        eval $init;
        bail_out("$name - init failed: $@") if $@;
    }

    for my $repeat_idx (0 .. $RepeatEach - 1) {
        write_user_files($block) if $repeat_idx > 0;
        run_requests($block, $repeat_idx);
    }
    scan_alerts($block, 'while the block ran');
}

sub run_requests {
    my ($block, $repeat_idx) = @_;
    my $name = $block->name;
    my $reqs = requests_of_block($block);
    my $timeout = parse_time(scalar $block->timeout) // $Timeout;
    my $middle = parse_time(scalar $block->raw_request_middle_delay);
    my $n_pipelined = $block->pipelined_requests
                      ? scalar @{ $block->pipelined_requests } : 0;
    my $need_array = $n_pipelined || @$reqs > 1;

    my $idx = 0;
    for my $r (0 .. $#$reqs) {
        my $packets = $reqs->[$r];
        my $bytes = join '', map { $_->{value} } @$packets;
        my $head_req = $bytes =~ /^\s*HEAD\s/;
        my $raw = http_exchange($packets, $timeout, $middle, 0, $block)
                  // '';
        my $count = $n_pipelined || 1;
        for my $k (1 .. $count) {
            my ($res, $left) = parse_response($raw, $head_req);
            if (!defined $block->ignore_response) {
                if ($res->{bad_chunked}) {
                    Test::More::fail("$name - invalid chunked body received");
                }
                check_response($block, $res, $idx, $repeat_idx, $need_array);
            }
            $raw = $left;
            if ($k < $count || $r < $#$reqs) {
                Time::HiRes::sleep(parse_time($block->wait))
                    if defined $block->wait;
                check_error_log($block, $repeat_idx);
            }
            $idx++;
        }
    }
    Time::HiRes::sleep(parse_time($block->wait)) if defined $block->wait;
    check_error_log($block, $repeat_idx);
}


# --- entry point ---------------------------------------------------------------

sub run_tests () {
    -x $NginxBinary or bail_out("cannot execute nginx binary $NginxBinary "
                                . "(set TEST_NGINX_BINARY)");
    nginx_version();
    my @blocks = Test::Base::blocks();
    @blocks = List::Util::shuffle(@blocks) unless $NoShuffle;
    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_block($block);
    }
    finish() unless $NoClean;
}

# Stops nginx and fails on [alert]/[emerg] lines written while it stopped.
sub finish {
    stop_nginx();
    scan_alerts($PrevBlock, 'while nginx stopped');
    undef $PrevBlock;
}

# Stops nginx and removes a TEST_NGINX_RANDOMIZE server root, at the end of
# the process that ran the tests.
sub final_cleanup {
    return unless $$ == $RunnerPid && !$InChild && !$NoClean;
    stop_nginx();
    File::Path::remove_tree($ServRoot)
        if $Randomize && $ServRoot =~ m{/t/servroot_\d+$};
}

# No nginx survives the test file, whatever ends it.
# SIGINT and SIGTERM exit through END; with the output gone (SIGPIPE,
# SIGHUP) there is nobody to report to, so nginx is stopped at once.
$SIG{INT} = sub { exit 130 };
$SIG{TERM} = sub { exit 143 };
$SIG{PIPE} = $SIG{HUP} = sub {
    final_cleanup();
    POSIX::_exit($_[0] eq 'PIPE' ? 141 : 129);
};

END {
    local $?;
    final_cleanup();
}

1;
