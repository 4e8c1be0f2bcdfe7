#!/bin/bash
# Runs aiserve's Test::Nginx suites under openresty's Test::Nginx::Socket
# instead of the project's own runner (t/lib), to check that the .t files
# stay compatible with it.  Each test runs twice: normal mode, then HUP mode
# (TEST_NGINX_USE_HUP=1).
#
# usage: tools/test-with-openresty.sh TEST_NGINX_CHECKOUT [TEST...]
#
#   TEST_NGINX_CHECKOUT  a checkout of https://github.com/openresty/test-nginx
#                        (the directory that holds lib/Test/Nginx/Socket.pm).
#                        This script downloads nothing (CI has no network):
#                        clone it beforehand where the network allows,
#                          git clone https://github.com/openresty/test-nginx
#   TEST...              .t files or directories (default: t/000-sanity.t)
#
# Needs Debian's nginx (or TEST_NGINX_BINARY), curl (HUP mode) and the
# runner's Perl modules:
#   apt-get install libtest-base-perl libtest-longstring-perl \
#       liblist-moreutils-perl libhttp-message-perl libtext-diff-perl
#
# It exports what aiserve's blocks refer to and openresty's runner does not
# set itself: TEST_NGINX_AISERVE_ROOT, TEST_NGINX_AISERVE_MODULE,
# TEST_NGINX_SERVROOT and TEST_NGINX_HTML_DIR.  Unless set, the server port
# is a free one and the server root t/servroot-openresty-PORT (removed
# afterwards), so that runs of several people do not collide.  Other
# TEST_NGINX_* variables pass through.

set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
    exit 2
fi

checkout=$(cd "$1" && pwd)
shift
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ ! -f "$checkout/lib/Test/Nginx/Socket.pm" ]; then
    echo "$0: $checkout has no lib/Test/Nginx/Socket.pm;" \
         "pass a checkout of openresty/test-nginx" >&2
    exit 2
fi

missing=
for m in Test::Base Test::LongString List::MoreUtils HTTP::Response \
         Text::Diff; do
    perl -M"$m" -e 1 2>/dev/null || missing="$missing $m"
done
if [ -n "$missing" ]; then
    echo "$0: missing Perl modules:$missing" >&2
    echo "  apt-get install libtest-base-perl libtest-longstring-perl" \
         "liblist-moreutils-perl libhttp-message-perl libtext-diff-perl" >&2
    exit 2
fi

# The runner under test must be openresty's, not t/lib's.
loaded=$(perl -I"$checkout/lib" -MTest::Nginx::Socket \
         -e 'print $INC{"Test/Nginx/Socket.pm"}' 2>/dev/null </dev/null)
case "$loaded" in
    "$checkout"/*) ;;
    *) echo "$0: Test::Nginx::Socket comes from '$loaded'," \
            "not from $checkout" >&2
       exit 2 ;;
esac

export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
export TEST_NGINX_AISERVE_ROOT=${TEST_NGINX_AISERVE_ROOT:-$root}
export TEST_NGINX_AISERVE_MODULE=${TEST_NGINX_AISERVE_MODULE:-$root/build/ngx_http_aiserve_module.so}
if [ -z "${TEST_NGINX_SERVER_PORT:-}" ]; then
    TEST_NGINX_SERVER_PORT=$(perl -MIO::Socket::INET -e \
        'print IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0,
                                     Listen => 1)->sockport')
fi
export TEST_NGINX_SERVER_PORT
if [ -z "${TEST_NGINX_SERVROOT:-}" ]; then
    TEST_NGINX_SERVROOT=$root/t/servroot-openresty-$TEST_NGINX_SERVER_PORT
    [ -n "${TEST_NGINX_NO_CLEAN:-}" ] ||
        trap 'rm -rf "$TEST_NGINX_SERVROOT"' EXIT
fi
export TEST_NGINX_SERVROOT
export TEST_NGINX_HTML_DIR=${TEST_NGINX_HTML_DIR:-$TEST_NGINX_SERVROOT/html}

[ $# -gt 0 ] || set -- t/000-sanity.t

echo "== openresty Test::Nginx ($checkout), normal mode"
prove -I "$checkout/lib" -r "$@"
echo "== openresty Test::Nginx ($checkout), HUP mode"
TEST_NGINX_USE_HUP=1 prove -I "$checkout/lib" -r "$@"
