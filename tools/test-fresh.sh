#!/usr/bin/env bash
# `make test-fresh`: the README's two commands on a bare Debian 12, as a new
# user runs them.
#
# Builds a throwaway Debian 12 (bookworm) root with mmdebstrap from the
# Debian mirrors this machine's apt uses, with only what the README asks a
# user to have (git, make, and sudo for the account), clones the committed
# HEAD of this checkout into a new user's home (with ../shared beside it
# when the checkout has one), and there, as that user:
#   1. `make run PORT=$FRESH_PORT` in the background until
#      POST /v1/embeddings answers 200 with an embedding, then stops it as
#      Ctrl-C does;
#   2. `make test` with TEST_NGINX_PORT=$FRESH_TEST_PORT.
# Prints a PASS/FAIL line per step and overall, exits non-zero on failure,
# and removes the root (FRESH_KEEP=1 keeps it).  Needs root (mmdebstrap,
# chroot, mounts); installs mmdebstrap when it is missing.
#
# The root shares this machine's network (nginx and the suites listen on
# 127.0.0.1 here), so it uses its own ports:
#   FRESH_PORT       make run's port            (default 8151)
#   FRESH_TEST_PORT  the suites' TEST_NGINX_PORT (default 2151)
#   FRESH_DIR        parent of the root          (default /var/tmp)
#   FRESH_LOGS       where the logs are kept     (default build/test-fresh)
#   FRESH_USER       the account: a user with sudo (default "aiserve"), or
#                    "root"
#   FRESH_KEEP=1     keep the root (its path is printed)
#   FRESH_RUN_TIMEOUT  seconds for make run to answer (default 3600: it
#                    installs the packages, downloads the model, builds)
#   FRESH_TEST_TIMEOUT seconds for make test (default 5400)
#
# Its mounts (/proc, /sys, /dev) and processes live in a mount and PID
# namespace of their own (unshare), so they end with it even when the script
# is interrupted: no nginx or mount is left behind on this machine.
set -euo pipefail

# The whole script is one function, read by bash before any of it runs, and
# the line that calls it exits: editing this file during a run (which takes
# minutes) does not change the run.
main() {

FRESH_PORT=${FRESH_PORT:-8151}
FRESH_TEST_PORT=${FRESH_TEST_PORT:-2151}
FRESH_DIR=${FRESH_DIR:-/var/tmp}
FRESH_USER=${FRESH_USER:-aiserve}
FRESH_KEEP=${FRESH_KEEP:-0}
FRESH_RUN_TIMEOUT=${FRESH_RUN_TIMEOUT:-3600}
FRESH_TEST_TIMEOUT=${FRESH_TEST_TIMEOUT:-5400}
SUITE=bookworm

msg() { echo "test-fresh: $*"; }
die() { echo "test-fresh: FAIL: $*" >&2; exit 1; }

# --- inside the namespaces: mount, enter the root, run the user's steps ---
if [ "${1:-}" = --inside ]; then
    R=$2
    # private mounts of this namespace; unmounted here, and gone with the
    # namespace in any case
    mount -t proc proc "$R/proc"
    mount --rbind /sys "$R/sys"
    mount --rbind /dev "$R/dev"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
    rc=0
    if [ "$FRESH_USER" = root ]; then
        home=/root
    else
        home=/home/$FRESH_USER
    fi
    chroot "$R" /usr/sbin/runuser -u "$FRESH_USER" -- /usr/bin/env -i \
        HOME="$home" USER="$FRESH_USER" LOGNAME="$FRESH_USER" SHELL=/bin/bash \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
        LANG=C.UTF-8 FRESH_PORT="$FRESH_PORT" \
        FRESH_TEST_PORT="$FRESH_TEST_PORT" \
        FRESH_RUN_TIMEOUT="$FRESH_RUN_TIMEOUT" \
        FRESH_TEST_TIMEOUT="$FRESH_TEST_TIMEOUT" \
        /bin/bash /opt/test-fresh-user.sh || rc=$?
    for m in dev/shm dev sys proc; do
        umount -R "$R/$m" || msg "could not unmount $R/$m (it goes with the namespace)"
    done
    exit "$rc"
fi

# --- the user's steps, run in the root as FRESH_USER ----------------------
user_steps() {
    cat <<'USER'
set -u
cd ~/aiserve
results=~/fresh-results
: >"$results"
now() { date +%s; }

# 1. make run, in the background in a session of its own, until it answers
t0=$(now)
echo "test-fresh: [inside] make run PORT=$FRESH_PORT (log: run.log)"
setsid make run PORT="$FRESH_PORT" >~/run.log 2>&1 </dev/null &
run_pid=$!
answer=
status=FAIL
note="no answer within ${FRESH_RUN_TIMEOUT}s"
while [ $(( $(now) - t0 )) -lt "$FRESH_RUN_TIMEOUT" ]; do
    if ! kill -0 "$run_pid" 2>/dev/null; then
        wait "$run_pid"; note="make run exited with status $? before answering"
        break
    fi
    # curl comes with the packages make run installs
    if command -v curl >/dev/null; then
        answer=$(curl -s -o ~/run-answer.json -w '%{http_code}' \
            http://127.0.0.1:"$FRESH_PORT"/v1/embeddings \
            -H 'Content-Type: application/json' \
            -d '{"input": "Hello world!", "model": "minilm"}' 2>/dev/null) || true
        if [ "$answer" = 200 ]; then
            dims=$(grep -o '"embedding":\[[^]]*\]' ~/run-answer.json \
                   | tr ',' '\n' | grep -c '[0-9]')
            if [ "$dims" -gt 0 ]; then
                status=PASS; note="200, an embedding of $dims floats"
            else
                note="200 without an embedding: $(head -c 200 ~/run-answer.json)"
            fi
            break
        fi
    fi
    sleep 2
done
echo "run $status $(( $(now) - t0 )) $note" >>"$results"
echo "test-fresh: [inside] make run: $status ($note)"
if kill -0 "$run_pid" 2>/dev/null; then
    # as Ctrl-C does: SIGINT to make, tools/run.sh and nginx
    kill -INT -- -"$run_pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$run_pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$run_pid" 2>/dev/null; then
        echo "test-fresh: [inside] make run did not stop on SIGINT" >&2
        kill -KILL -- -"$run_pid" 2>/dev/null
        echo "run-stop FAIL 0 did not stop on SIGINT" >>"$results"
    fi
fi
wait "$run_pid" 2>/dev/null
if (exec 3<>/dev/tcp/127.0.0.1/"$FRESH_PORT") 2>/dev/null; then
    echo "run-stop FAIL 0 127.0.0.1:$FRESH_PORT still open after make run stopped" >>"$results"
fi
[ "$status" = PASS ] || exit 1

# 2. make test
t0=$(now)
echo "test-fresh: [inside] make test TEST_NGINX_PORT=$FRESH_TEST_PORT (log: test.log)"
TEST_NGINX_PORT=$FRESH_TEST_PORT timeout "$FRESH_TEST_TIMEOUT" make test \
    >~/test.log 2>&1 </dev/null
rc=$?
if [ "$rc" = 0 ]; then
    status=PASS; note="$(grep -c '^All tests successful' ~/test.log) prove runs, all tests successful"
else
    failed=$(grep -oE '^[^ ]+ +\(Wstat: [0-9]+' ~/test.log | awk '{ print $1 }' | sort -u | tr '\n' ' ')
    status=FAIL; note="exit status $rc; failed: ${failed:-see test.log}"
fi
echo "test $status $(( $(now) - t0 )) $note" >>"$results"
echo "test-fresh: [inside] make test: $status"
[ "$status" = PASS ]
USER
}

# --- on this machine --------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, chroot and mounts): sudo make test-fresh"

cd "$(dirname "$0")/.."
ROOT=$(pwd)
HEAD=$(git rev-parse HEAD)
LOGS=${FRESH_LOGS:-$ROOT/build/test-fresh}
mkdir -p "$LOGS"
LOGS=$(cd "$LOGS" && pwd)
rm -f "$LOGS"/*.log "$LOGS"/run-answer.json

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    msg "note: uncommitted changes are not tested (the root gets a clone of HEAD $HEAD)"
fi

# ../shared beside the checkout, as the main checkout has it; a git worktree
# finds it beside the main checkout.
SHARED=
for d in "$ROOT/../shared" "$(git rev-parse --path-format=absolute --git-common-dir)/../../shared"; do
    if [ -d "$d" ]; then SHARED=$(cd "$d" && pwd); break; fi
done

if ! command -v mmdebstrap >/dev/null; then
    msg "installing mmdebstrap (Debian's package) to build the root"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null \
        || die "apt-get install mmdebstrap failed"
fi

# The Debian sources of this machine's apt for bookworm (one-line and deb822
# files), in one-line form: other vendors' repositories are left out.
sources_of_host() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
            | awk '$1 == "deb" && NF >= 4 { $1 = "deb"; print }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush(   i, j, nu, ns, u, s) {
                if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                    nu = split(uris, u, " "); ns = split(suites, s, " ")
                    for (i = 1; i <= nu; i++)
                        for (j = 1; j <= ns; j++)
                            print "deb", u[i], s[j], comps
                }
                types = uris = suites = comps = ""; enabled = "yes"
            }
            BEGIN { enabled = "yes" }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "components") comps = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }' "$f"
    done
}
SOURCES=$(sources_of_host | awk -v s="$SUITE" \
    '$3 == s || $3 == s "-updates" || $3 == s "-security" { print }' | sort -u)
[ -n "$SOURCES" ] || die "no Debian $SUITE source in /etc/apt/sources.list*"

R=$(mktemp -d "$FRESH_DIR/aiserve-fresh.XXXXXX") || die "cannot make a directory in FRESH_DIR=$FRESH_DIR"
chmod 755 "$R"

cleanup() {
    local rc=$?
    if [ -d "$R" ]; then
        if [ "$FRESH_KEEP" = 1 ]; then
            msg "kept the root: $R"
        elif grep -q " $R/" /proc/self/mounts; then
            msg "something is still mounted under $R: left in place" >&2
        else
            rm -rf --one-file-system "$R"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s; }
mins() { printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); }
T_START=$(now)
msg "Debian $SUITE root in $R, HEAD $HEAD"
msg "sources:"
echo "$SOURCES" | sed 's/^/    /'
printf '%s\n' "$SOURCES" >"$LOGS/sources.list"

# 1. the bare system: Debian's required and important packages (what a
# minimal installation has) and the README's prerequisites
t0=$(now)
msg "mmdebstrap (log: $LOGS/bootstrap.log)"
if unshare --mount --propagation private -- \
       mmdebstrap --mode=root --variant=important --include=git,make,sudo \
       "$SUITE" "$R" "$LOGS/sources.list" >"$LOGS/bootstrap.log" 2>&1; then
    BOOT=PASS
else
    BOOT=FAIL
fi
T_BOOT=$(( $(now) - t0 ))
msg "bootstrap: $BOOT ($(mins $T_BOOT))"
[ "$BOOT" = PASS ] || { tail -20 "$LOGS/bootstrap.log" >&2; die "mmdebstrap failed"; }

# Name resolution and localhost as on the host.  Services do not start
# inside the root (policy-rc.d, as in any chroot): a packaged nginx started
# by its postinst would take port 80 of this machine, whose network the
# root shares.
cp /etc/resolv.conf "$R/etc/resolv.conf"
cp /etc/hosts "$R/etc/hosts"
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"

# Certificates this machine trusts beyond Debian's set (the CA of a proxy
# that intercepts TLS, say) become local CAs of the root, as the
# administrator of such a network installs them: the downloads (pip, curl)
# then work there as here.  Debian's ca-certificates, when make deps
# installs it, adds them to the root's bundle.
host_extra_cas() {
    local dir=$1 bundle=/etc/ssl/certs/ca-certificates.crt f n=0
    [ -f "$bundle" ] || return 0
    mkdir -p "$dir"
    # PEM blocks of the bundle that no certificate of Debian's
    # ca-certificates has (update-ca-certificates concatenates them as they
    # are), one file each
    awk -v dir="$dir" '
        /-BEGIN CERTIFICATE-/ { pem = ""; inpem = 1 }
        inpem { pem = pem $0 "\n" }
        /-END CERTIFICATE-/ {
            inpem = 0
            if (FILENAME != bundle) { debian[pem] = 1; next }
            if (!(pem in debian)) printf "%s", pem > (dir "/host-ca-" ++n ".crt")
        }' bundle="$bundle" /usr/share/ca-certificates/*/*.crt "$bundle"
    for f in "$dir"/host-ca-*.crt; do
        [ -f "$f" ] || continue
        n=$(( n + 1 ))
        msg "local CA from this machine: $(openssl x509 -noout -subject -in "$f" 2>/dev/null || basename "$f")"
    done
}
host_extra_cas "$R/usr/local/share/ca-certificates"
if [ -x "$R/usr/sbin/update-ca-certificates" ]; then
    chroot "$R" update-ca-certificates >/dev/null
fi

# the account: a user who may sudo, as on a fresh installation
if [ "$FRESH_USER" = root ]; then
    HOME_IN=/root
else
    chroot "$R" useradd -m -s /bin/bash "$FRESH_USER"
    echo "$FRESH_USER ALL=(ALL) NOPASSWD:ALL" >"$R/etc/sudoers.d/$FRESH_USER"
    chmod 440 "$R/etc/sudoers.d/$FRESH_USER"
    HOME_IN=/home/$FRESH_USER
fi

# a clean clone of the committed HEAD, ../shared beside it
git clone -q --no-checkout --no-hardlinks "$ROOT" "$R$HOME_IN/aiserve"
git -C "$R$HOME_IN/aiserve" checkout -q "$HEAD"
if [ -n "$SHARED" ]; then
    cp -a "$SHARED" "$R$HOME_IN/shared"
else
    msg "note: no ../shared beside the checkout; the clone gets none"
fi
if [ "$FRESH_USER" != root ]; then
    chroot "$R" chown -R "$FRESH_USER:$FRESH_USER" "$HOME_IN"
fi
user_steps >"$R/opt/test-fresh-user.sh"

# 2. make run, then make test, inside the root (own mount and PID namespace)
rc=0
FRESH_PORT=$FRESH_PORT FRESH_TEST_PORT=$FRESH_TEST_PORT FRESH_USER=$FRESH_USER \
FRESH_RUN_TIMEOUT=$FRESH_RUN_TIMEOUT FRESH_TEST_TIMEOUT=$FRESH_TEST_TIMEOUT \
    unshare --mount --propagation private --pid --fork -- \
    "$ROOT/tools/test-fresh.sh" --inside "$R" || rc=$?

for f in run.log test.log run-answer.json fresh-results; do
    [ -f "$R$HOME_IN/$f" ] && cp "$R$HOME_IN/$f" "$LOGS/"
done

# the summary
overall=PASS
[ "$rc" = 0 ] || overall=FAIL
echo
msg "summary (HEAD $HEAD, logs in $LOGS)"
printf 'test-fresh:   %-10s %s  %8s  %s\n' bootstrap "$BOOT" "$(mins $T_BOOT)" \
    "mmdebstrap --variant=important --include=git,make,sudo $SUITE"
seen_test=0
if [ -f "$LOGS/fresh-results" ]; then
    while read -r step status secs note; do
        case $step in
            run) name="make run" ;;
            run-stop) name="stop run" ;;
            test) name="make test"; seen_test=1 ;;
            *) name=$step ;;
        esac
        [ "$status" = PASS ] || overall=FAIL
        printf 'test-fresh:   %-10s %s  %8s  %s\n' "$name" "$status" "$(mins "$secs")" "$note"
    done <"$LOGS/fresh-results"
fi
[ "$seen_test" = 1 ] || overall=FAIL
msg "$overall in $(mins $(( $(now) - T_START ))) (as user $FRESH_USER, make run on port $FRESH_PORT, TEST_NGINX_PORT=$FRESH_TEST_PORT)"
if [ "$overall" != PASS ]; then
    for f in run.log test.log; do
        [ -f "$LOGS/$f" ] || continue
        echo "--- last lines of $LOGS/$f"
        tail -25 "$LOGS/$f"
    done
    exit 1
fi
}

# on one line: bash has read the exit before main returns
main "$@"; exit
