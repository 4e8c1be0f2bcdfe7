# Self-test of the Test::Nginx runner with stock nginx only: every section
# aiserve's suites use, in both normal and HUP mode.  Runs unchanged under
# openresty's Test::Nginx::Socket (tools/test-with-openresty.sh).

use Test::Nginx::Socket 'no_plan';
use File::Temp ();
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_http_concurrent aiserve_free_port);

repeat_each(2);
no_shuffle();

$ENV{TEST_NGINX_SANITY_GREETING} = 'hello from the environment';

# Blocks with "--- concurrent: N" send N requests at once to /c after their
# own request, with AiserveTest, and check every answer.
add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $n = $block->concurrent or return;
    $n =~ s/\s+//g;
    my @reqs = map { { uri => "/c?id=$_" } } 1 .. $n;
    my @res = aiserve_http_concurrent(server_port(), \@reqs, 8);
    my @bad = grep { ($res[$_ - 1]{status} // 0) != 200
                     || $res[$_ - 1]{body} ne "id=$_\n"
                     || $res[$_ - 1]{headers}{'x-id'} ne $_
                     || defined $res[$_ - 1]{error} } 1 .. $n;
    is(scalar @bad, 0, $block->name . " - $n concurrent answers, each its own")
        or diag Test::More::explain [@res[map { $_ - 1 } @bad]];
});

run_tests();

# The runner must also fail when it should.  A file of broken blocks (and,
# after a LAST block, one that must not run) runs under aiserve's runner
# (t/lib) in a child, in the current mode (normal, HUP or valgrind), on its
# own port and server root (with a stray file in it); exactly the expected
# checks fail, and no nginx of it survives.
{
    my $root = "$FindBin::Bin/servroot-selftest-$$";
    my ($out, $fixture) = File::Temp::tempfile('aiserve-broken-XXXXXX',
                                               TMPDIR => 1, UNLINK => 1);
    print $out <<'EOT';
use Test::Nginx::Socket 'no_plan';
no_shuffle();
master_on();
run_tests();
__DATA__

=== TEST 1: wrong body
--- config
    location = /t { return 200 "hello\n"; }
--- request
GET /t
--- response_body
bye

=== TEST 2: an alert in the error log fails the block
--- main_config
worker_rlimit_nofile 2000000000;
--- config
    location = /t { return 200 "hello\n"; }
--- request
GET /t
--- response_body
hello

=== TEST 3: must_die, but nginx starts
--- config
--- must_die
--- error_log
unknown directive

=== TEST 4: no_error_log that matches, header that is missing
--- config
--- request
GET /nope
--- error_code: 404
--- response_headers
X-Absent: 1
--- no_error_log
No such file or directory
--- LAST

=== TEST 5: never run: the block before is the LAST
--- config
--- request
GET /
--- response_body
not what nginx answers
EOT
    close $out;
    my $port = aiserve_free_port();
    local %ENV = %ENV;
    delete @ENV{qw(TEST_NGINX_RANDOMIZE TEST_NGINX_NO_CLEAN
                   TEST_NGINX_CLIENT_PORT TEST_NGINX_PORT)};
    $ENV{TEST_NGINX_SERVER_PORT} = $port;
    $ENV{TEST_NGINX_SERVROOT} = $root;
    mkdir $root;
    open my $stray, '>', "$root/stray-file" or die "$root/stray-file: $!";
    close $stray;
    my $tap = `$^X -I$FindBin::Bin/lib $fixture 2>&1`;
    my $status = $?;
    my @failed = map { s/ - .*//sr } $tap =~ /^not ok \d+ - \S+ (TEST \d+:.*)$/mg;
    is(join("\n", @failed), join("\n",
        "TEST 1: wrong body",
        "TEST 1: wrong body",
        "TEST 2: an alert in the error log fails the block",
        "TEST 3: must_die, but nginx starts",
        "TEST 3: must_die, but nginx starts",
        "TEST 4: no_error_log that matches, header that is missing",
        "TEST 4: no_error_log that matches, header that is missing"),
       "the runner fails the broken blocks, and only them")
        or diag $tap;
    like($tap, qr/^not ok \d+ - .*TEST 2.*\[alert\] .*setrlimit/m,
         "the failure names the [alert] line");
    like($tap, qr/^not ok \d+ - .*TEST 1.* holds stray-file, which is not/m,
         "a file of the test's own in the server root fails");
    isnt($status, 0, "the broken file exits non-zero");
    # A master or worker left behind would hold the listening socket.
    ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port),
       "no nginx of the broken file is left running");
    system('rm', '-rf', $root);

    my $res = aiserve_http(aiserve_free_port(), { uri => '/' }, timeout => 5);
    ok(!defined $res->{status} && ($res->{error} // '') =~ /^connect: /,
       "AiserveTest reports a refused connection as an error")
        or diag Test::More::explain $res;
}

__DATA__

=== TEST 1: return, response_body, no_error_log
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
--- response_body
hello
--- no_error_log
[error]
[alert]



=== TEST 2: add_header, response_headers with absence, headers_like
--- config
    location = /t {
        add_header X-Foo "bar baz";
        return 200 "ok";
    }
--- request
GET /t
--- response_headers
X-Foo: bar baz
Content-Length: 2
!X-Missing
--- response_body chomp
ok



=== TEST 3: response_headers_like, raw_response_headers_like, response_body_like
--- config
    location = /t {
        add_header X-Num 12345;
        return 200 "the answer is 42\n";
    }
--- request
GET /t
--- response_headers_like
X-Num: \d+
Content-Type: text/plain
--- raw_response_headers_like: ^HTTP/1\.1 200 OK\r\n.*\r\nX-Num: 12345\r\n$
--- raw_response_headers_unlike: Transfer-Encoding
--- response_body_like: answer is \d+$



=== TEST 4: chunked response is decoded
--- config
    location = /t {
        sub_filter_types *;
        sub_filter 'a' 'A';
        sub_filter_once off;
        return 200 "banana\n";
    }
--- request
GET /t
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body
bAnAnA



=== TEST 5: error_code and error_log on a missing file
--- config
--- request
GET /no-such-file.txt
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log
No such file or directory
[error]



=== TEST 6: error_log and no_error_log with eval arrays of regexes
--- config
--- request
GET /missing-again
--- error_code: 404
--- error_log eval
[qr/open\(\) "[^"]+missing-again" failed/, "(2: No such file"]
--- no_error_log eval
[qr/\[(crit|alert|emerg)\]/, "segmentation fault"]



=== TEST 7: grep_error_log
--- config
--- request
GET /missing-third
--- error_code: 404
--- grep_error_log eval: qr/open\(\) "[^"]+" failed/
--- grep_error_log_out
open() "$TEST_NGINX_SERVER_ROOT/html/missing-third" failed



=== TEST 8: more_headers
--- config
    location = /t {
        return 200 "foo=$http_x_foo agent=$http_user_agent\n";
    }
--- request
GET /t
--- more_headers
X-Foo: 1 2 3
User-Agent: sanity
--- response_body
foo=1 2 3 agent=sanity



=== TEST 9: the request body is sent, with a Content-Length (trimmed)
--- config
    location /dav/ {
        root html;
        dav_methods PUT;
        create_full_put_path on;
    }
    location = /len {
        return 200 "len=$http_content_length\n";
    }
--- request eval
["PUT /dav/f.txt
hello world
", "GET /dav/f.txt", "POST /len
 twelve bytes
"]
--- error_code_like eval
["^20[14]\$", "^200\$", "^200\$"]
--- response_body eval
["", "hello world", "len=12\n"]



=== TEST 10: request eval arrays with per-request more_headers
--- config
    location = /t {
        return 200 "$http_x_n\n";
    }
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
["X-N: one", "X-N: two"]
--- response_body eval
["one\n", "two\n"]



=== TEST 11: a body over client_max_body_size gets 413, the runner survives
--- config
    location = /t {
        client_max_body_size 1k;
        return 200 "read\n";
    }
--- request eval
"POST /t\n" . ("x" x 1_000_000)
--- error_code: 413
--- error_log
client intended to send too large body



=== TEST 12: request sent in packets with a delay
--- config
    location = /len {
        return 200 "len=$http_content_length\n";
    }
--- request eval
[["POST /len\n", {value => "abc", delay_before => 0.05}, "def"]]
--- response_body eval
["len=6\n"]



=== TEST 13: raw_request, HTTP/1.0
--- config
    location = /t {
        return 200 "proto=$server_protocol\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- response_body
proto=HTTP/1.0



=== TEST 14: raw_request in pieces
--- config
    location = /t {
        return 200 "uri=$uri\n";
    }
--- raw_request eval
["GET /", "t HTTP/1.1\r\nHost: localhost\r\n", "Connection: close\r\n\r\n"]
--- raw_request_middle_delay: 0.01
--- response_body
uri=/t



=== TEST 15: pipelined_requests
--- config
    location /p {
        return 200 "$uri\n";
    }
--- pipelined_requests eval
["GET /p1", "GET /p2", "GET /p3"]
--- response_body eval
["/p1\n", "/p2\n", "/p3\n"]



=== TEST 16: HEAD request has no body
--- config
    location = /t {
        return 200 "body\n";
    }
--- request
HEAD /t
--- response_headers
Content-Length: 5
--- response_body eval
""



=== TEST 17: main_config (a thread pool) and $TEST_NGINX_* variables
--- main_config
thread_pool sanity_pool threads=2;
--- config
    location = /t {
        aio threads=sanity_pool;
        return 200 "$TEST_NGINX_SANITY_GREETING on $TEST_NGINX_SERVER_PORT\n";
    }
--- request
GET /t
--- response_body
hello from the environment on $TEST_NGINX_SERVER_PORT



=== TEST 18: http_config eval and config eval
--- http_config eval
"map \$uri \$sanity_mapped { default '" . ("ab" x 3) . "'; }"
--- config eval
"location = /t { return 200 \"\$sanity_mapped-" . (6 * 7) . "\\n\"; }"
--- request
GET /t
--- response_body
ababab-42



=== TEST 19: response_body eval with a regex
--- config
    location = /t {
        return 200 "random=$request_id\n";
    }
--- request
GET /t
--- response_body eval
qr/^random=[0-9a-f]{32}\n\z/



=== TEST 20: response_body_filters
--- config
    location = /t {
        return 200 "Hello\n";
    }
--- request
GET /t
--- response_body_filters
uc
--- response_body
HELLO



=== TEST 21: user_files are served from the html directory
--- user_files
>>> sub/hello.txt
served from a user file
--- config
--- request
GET /sub/hello.txt
--- response_body
served from a user file



=== TEST 22: a bad directive makes nginx die with an emerg
--- config
    location = /t {
        no_such_directive on;
    }
--- must_die
--- error_log
unknown directive "no_such_directive"
[emerg]



=== TEST 23: an unknown thread pool makes nginx die with exit code 1
--- config
    location = /t {
        aio threads=not_declared;
    }
--- must_die: 1
--- error_log eval
qr/\[emerg\] .*thread pool "not_declared"/



=== TEST 24: the block after must_die starts nginx again
--- config
    location = /t {
        return 200 "back\n";
    }
--- request
GET /t
--- response_body
back
--- no_error_log
[emerg]



=== TEST 25: many clients at once (AiserveTest), chunked answers
--- config
    location = /c {
        add_header X-Id $arg_id;
        sub_filter_types *;
        sub_filter 'ID=' 'id=';
        return 200 "ID=$arg_id\n";
    }
--- request
GET /c?id=0
--- response_headers
Transfer-Encoding: chunked
--- response_body
id=0
--- concurrent: 40
--- no_error_log
[error]



=== TEST 26: a block without config reuses the previous server
--- request
GET /c?id=7
--- response_body
id=7



=== TEST 27: log_level per block and timeout
--- log_level: warn
--- timeout: 5
--- config
    location = /t {
        return 200 "quiet\n";
    }
--- request
GET /t
--- response_body
quiet
--- no_error_log
http request line: "GET /t



=== TEST 28: SKIP blocks are not run
--- SKIP
--- config
    location = /t {
        return 500;
    }
--- request
GET /t
--- response_body
never



=== TEST 29: skip_nginx skips by nginx version
--- skip_nginx
2: > 0.0.1
--- config
    location = /t {
        return 500;
    }
--- request
GET /t
--- response_body
never
