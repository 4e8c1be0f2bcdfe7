package AiserveTest;

# Helpers for aiserve's t/*.t files that need more than Test::Nginx's data
# sections, e.g. many clients at once against one running nginx.  Not part
# of Test::Nginx's interface: a .t file that uses this module loads it after
# Test::Nginx::Socket, with t/lib on the include path, so it works under both
# runners:
#
#     use Test::Nginx::Socket 'no_plan';
#     use FindBin;
#     use lib "$FindBin::Bin/lib";
#     use AiserveTest qw(aiserve_http_concurrent);
#
# (loading Test::Nginx::Socket first keeps openresty's runner in charge when
# it is the one on the include path).

use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINPROGRESS EINTR);
use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_ERROR);
use Time::HiRes ();

our @EXPORT_OK = qw(aiserve_http_concurrent aiserve_http aiserve_request
                    aiserve_free_port aiserve_sanitizer_env
                    aiserve_sanitizer_reports);

# aiserve_request(\%req) -> raw HTTP/1.1 request bytes.
#
# %req: method (default GET, or POST when there is a body), uri (default
# "/"), headers (hash or array of pairs), body (bytes).  Adds Host,
# "Connection: close" and Content-Length unless given.
sub aiserve_request {
    my ($r) = @_;
    return $r unless ref $r;
    my $body = $r->{body};
    my $method = $r->{method} // (defined $body ? 'POST' : 'GET');
    my $uri = $r->{uri} // '/';
    my @h = ref $r->{headers} eq 'HASH' ? %{ $r->{headers} }
          : @{ $r->{headers} // [] };
    my %have;
    my $head = "$method $uri HTTP/1.1\r\n";
    while (my ($k, $v) = splice @h, 0, 2) {
        $have{lc $k} = 1;
        $head .= "$k: $v\r\n";
    }
    $head .= "Host: localhost\r\n" unless $have{host};
    $head .= "Connection: close\r\n" unless $have{connection};
    $head .= "Content-Length: " . length($body) . "\r\n"
        if defined $body && !$have{'content-length'}
           && !$have{'transfer-encoding'};
    return "$head\r\n" . ($body // '');
}

# aiserve_http_concurrent($port, \@requests, $concurrency, %opt)
#   -> list of results, in the order of @requests.
#
# Sends every request on its own connection to 127.0.0.1:$port, keeping at
# most $concurrency (default: all) connections open at once, from one
# process with non-blocking sockets; a connection is read until the server
# closes it.  A request is raw bytes or a hash for aiserve_request().
# %opt: timeout => seconds for the whole run (default 30), host => address.
#
# Each result is a hash: status (number, undef when no response), headers
# (hash, lower-case names, repeated headers joined with ", "), body
# (de-chunked), raw (bytes received), error (undef or a message: connect
# failure, timeout, malformed response), elapsed (seconds from connect to
# close).
sub aiserve_http_concurrent {
    my ($port, $requests, $concurrency, %opt) = @_;
    local $SIG{PIPE} = 'IGNORE';    # a server may close before the body
    my $host = $opt{host} // '127.0.0.1';
    my $deadline = Time::HiRes::time() + ($opt{timeout} // 30);
    $concurrency ||= scalar @$requests;

    my @results = map { { status => undef, headers => {}, body => '',
                          raw => '', error => undef } } @$requests;
    my @queue = 0 .. $#$requests;
    my %conn;       # fileno -> {sock, idx, out, off, start}
    my $rsel = IO::Select->new;
    my $wsel = IO::Select->new;

    while (@queue || %conn) {
        while (@queue && keys %conn < $concurrency) {
            my $i = shift @queue;
            my $sock = IO::Socket::INET->new(Proto => 'tcp', Blocking => 0,
                                             PeerAddr => $host,
                                             PeerPort => $port);
            if (!$sock) {
                $results[$i]{error} = "connect: $!";
                next;
            }
            $conn{fileno $sock} = { sock => $sock, idx => $i, off => 0,
                                    out => aiserve_request($requests->[$i]),
                                    start => Time::HiRes::time() };
            $wsel->add($sock);
        }
        last unless %conn;

        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) {
            for my $c (values %conn) {
                $results[$c->{idx}]{error} = 'timeout';
                close $c->{sock};
            }
            last;
        }
        my ($r, $w) = IO::Select->select($rsel, $wsel, undef, $left);

        for my $sock (@{ $w // [] }) {
            my $c = $conn{fileno $sock};
            my $err = unpack 'i', getsockopt($sock, SOL_SOCKET, SO_ERROR);
            if ($err) {
                local $! = $err;
                finish($c, \%conn, $rsel, $wsel, \@results, "connect: $!");
                next;
            }
            my $n = syswrite($sock, $c->{out}, length($c->{out}) - $c->{off},
                             $c->{off});
            if (defined $n) {
                $c->{off} += $n;
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                # The server may answer before reading all of the body.
                $c->{off} = length $c->{out};
            }
            if ($c->{off} >= length $c->{out}) {
                $wsel->remove($sock);
                $rsel->add($sock);
            }
        }

        for my $sock (@{ $r // [] }) {
            my $c = $conn{fileno $sock} or next;
            my $n = sysread($sock, my $buf, 65536);
            if (defined $n && $n > 0) {
                $results[$c->{idx}]{raw} .= $buf;
            } elsif (defined $n
                     || ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR))
            {
                finish($c, \%conn, $rsel, $wsel, \@results,
                       defined $n ? undef : "read: $!");
            }
        }
    }

    parse_into($_) for grep { length $_->{raw} } @results;
    return @results;
}

# aiserve_http($port, $request, %opt) -> one result, as above.
sub aiserve_http {
    my ($port, $req, %opt) = @_;
    my ($res) = aiserve_http_concurrent($port, [$req], 1, %opt);
    return $res;
}

# aiserve_free_port() -> a TCP port on 127.0.0.1 that nothing listens on now
# (the kernel's choice), for a second server or a child test run.
sub aiserve_free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1)
        or die "cannot find a free port: $!\n";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# aiserve_sanitizer_env($logdir) -> "env LD_PRELOAD=... " to put before an
# nginx command that a suite runs itself, or '' outside make test-asan: the
# sanitizer runtimes of TEST_NGINX_SANITIZER_PRELOAD (and the runtimes' own
# options) as the runner gives them to nginx, each process's reports in
# $logdir/asan.PID and $logdir/ubsan.PID.  $preload: more libraries to
# preload after the runtimes (which must come first).
sub aiserve_sanitizer_env {
    my ($logdir, $preload) = @_;
    my $san = $ENV{TEST_NGINX_SANITIZER_PRELOAD};
    my $libs = join ' ', grep { defined && length } $san, $preload;
    return '' unless length $libs;
    my $env = "env LD_PRELOAD='$libs'";
    return "$env " unless $san;
    for (['ASAN_OPTIONS', 'TEST_NGINX_ASAN_OPTIONS', 'asan'],
         ['UBSAN_OPTIONS', 'TEST_NGINX_UBSAN_OPTIONS', 'ubsan'])
    {
        my ($var, $from, $log) = @$_;
        $env .= " $var='" . join(':', grep { defined && length }
                                       $ENV{$from}, "log_path=$logdir/$log")
                . "'";
    }
    return "$env ";
}

# aiserve_sanitizer_reports($logdir) -> the sanitizers' reports written
# there ('' when none)
sub aiserve_sanitizer_reports {
    my ($logdir) = @_;
    my $text = '';
    for my $f (glob("$logdir/asan.* $logdir/ubsan.*")) {
        open my $in, '<', $f or next;
        local $/;
        $text .= <$in>;
    }
    return $text;
}

sub finish {
    my ($c, $conn, $rsel, $wsel, $results, $error) = @_;
    my $sock = $c->{sock};
    $rsel->remove($sock);
    $wsel->remove($sock);
    delete $conn->{fileno $sock};
    close $sock;
    $results->[$c->{idx}]{error} //= $error;
    $results->[$c->{idx}]{elapsed} = Time::HiRes::time() - $c->{start};
}

sub parse_into {
    my ($res) = @_;
    my $raw = $res->{raw};
    if ($raw !~ /\A(HTTP\/\d\.\d) (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n/s) {
        $res->{error} //= 'malformed response';
        return;
    }
    $res->{status} = $2;
    my $rest = substr($raw, length $&);
    for my $line (split /\r\n/, $3) {
        my ($k, $v) = $line =~ /^([^:]+):\s*(.*?)\s*$/ or next;
        $k = lc $k;
        $res->{headers}{$k} = exists $res->{headers}{$k}
                              ? "$res->{headers}{$k}, $v" : $v;
    }
    my $te = $res->{headers}{'transfer-encoding'} // '';
    if ($te =~ /chunked/i) {
        my $body = '';
        while ($rest =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            if (length $rest < $n + 2) {
                $res->{error} //= 'truncated chunked body';
                last;
            }
            $body .= substr($rest, 0, $n);
            substr($rest, 0, $n + 2) = '';
        }
        $res->{body} = $body;
    } elsif (defined(my $len = $res->{headers}{'content-length'})) {
        $res->{error} //= 'truncated body' if length $rest < $len;
        $res->{body} = substr($rest, 0, $len);
    } else {
        $res->{body} = $rest;
    }
}

1;
