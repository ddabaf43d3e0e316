#!/bin/bash
# tls-bench.sh: full TLS handshakes per second on an implicit-TLS (smtps)
# port: postern-smtpd next to a private Postfix instance with the same
# certificate, on the same machine, measured with `openssl s_time -new`
# (a new session per connection, no resumption).
#
#   bench/tls-bench.sh [-t SECONDS] [-b BUILDDIR] [-k ec|rsa] [-P]
#
# -P skips Postfix. Postfix runs from a configuration directory in a temp
# directory (postconf -c DIR -e, a master.cf with only an smtps service on
# a free loopback port, its own queue and data directories), started with
# `postfix -c DIR start` and stopped with `postfix -c DIR stop`; this needs
# root and the postfix user. Everything is removed at the end.
set -euo pipefail

seconds=10
keytype=ec
with_postfix=1
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}

while getopts "t:b:k:P" o; do
        case $o in
        t) seconds=$OPTARG ;;
        b) build=$OPTARG ;;
        k) keytype=$OPTARG ;;
        P) with_postfix= ;;
        *) echo "usage: $0 [-t seconds] [-b builddir] [-k ec|rsa] [-P]" >&2; exit 2 ;;
        esac
done

smtpd=$build/src/smtpd/postern-smtpd
[ -x "$smtpd" ] || { echo "no $smtpd: build first" >&2; exit 1; }

work=$(mktemp -d /var/tmp/postern-tls-bench.XXXXXX)
chmod 755 "$work"
pid=
postfix_dir=
cleanup() {
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
        [ -n "$postfix_dir" ] && /usr/sbin/postfix -c "$postfix_dir" stop >/dev/null 2>&1 || true
        rm -rf "$work"
}
trap cleanup EXIT

free_port() {
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_tls() {
        for _ in $(seq 200); do
                if echo QUIT | timeout 5 openssl s_client -connect "127.0.0.1:$1" -quiet \
                        2>/dev/null | grep -q '^220 '; then
                        return 0
                fi
                sleep 0.05
        done
        echo "no TLS greeting on port $1" >&2
        return 1
}

# s_time prints "N connections in T real seconds, B bytes read per
# connection"; the rate is N / T.
handshakes() {
        openssl s_time -connect "127.0.0.1:$1" -new -time "$seconds" 2>/dev/null |
                awk '/connections in .* real seconds/ { printf "%.0f", $1 / $4 }'
}

if [ "$keytype" = rsa ]; then
        newkey=(-newkey rsa:2048)
else
        newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
fi
openssl req -x509 "${newkey[@]}" -nodes -days 1 -subj /CN=mail.example.com \
        -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"

# postern-smtpd, smtps service.
mkdir -p "$work/conf/services.d" "$work/queue"/{incoming,active,deferred,hold,corrupt,maildrop}
cat > "$work/conf/main.cf" <<CONF
myhostname = bench.example.test
queue_directory = $work/queue
max_idle = 600s
smtpd_tls_cert_file = $work/cert.pem
smtpd_tls_key_file = $work/key.pem
CONF
echo "smtpd_tls_wrappermode = yes" > "$work/conf/services.d/smtps.cf"
port=$(free_port)
systemd-socket-activate -l "127.0.0.1:$port" --fdname=smtps -E POSTERN_LOG_TARGET=stderr \
        "$smtpd" --service=smtps -c "$work/conf" 2>"$work/smtpd.log" &
pid=$!
wait_tls "$port"
postern_rate=$(handshakes "$port")
cpu=$(awk '{ print ($14 + $15) / 100 }' "/proc/$pid/stat")
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=

echo "key: $keytype, $(openssl version), ${seconds}s of openssl s_time -new per server"
printf '%-32s %8s full handshakes/s (daemon CPU %ss)\n' "postern-smtpd (smtps)" "$postern_rate" "$cpu"

if [ -z "$with_postfix" ]; then
        exit 0
fi
if ! [ -x /usr/sbin/postfix ] || [ "$(id -u)" != 0 ] || ! id postfix >/dev/null 2>&1; then
        echo "Postfix: skipped (needs postfix installed, root and the postfix user)"
        exit 0
fi

# A private Postfix: only an smtps listener on loopback.
postfix_dir=$work/postfix
mkdir -p "$postfix_dir" "$work/pf-queue" "$work/pf-data"
chown postfix "$work/pf-data"
pf_port=$(free_port)
touch "$postfix_dir/main.cf"
postconf -c "$postfix_dir" -e \
        "queue_directory = $work/pf-queue" \
        "data_directory = $work/pf-data" \
        "mail_owner = postfix" \
        "inet_interfaces = 127.0.0.1" \
        "inet_protocols = ipv4" \
        "myhostname = bench.example.test" \
        "mydestination =" \
        "compatibility_level = 3.6" \
        "maillog_file = $work/postfix.log" \
        "smtpd_tls_cert_file = $work/cert.pem" \
        "smtpd_tls_key_file = $work/key.pem" \
        "smtpd_tls_security_level = may" \
        "smtpd_tls_session_cache_database =" \
        "default_process_limit = 100"
# postlog lets the instance log without syslog; the other services are
# what every Postfix needs to start.
cat > "$postfix_dir/master.cf" <<MASTER
127.0.0.1:$pf_port inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
MASTER
/usr/sbin/postfix -c "$postfix_dir" check >/dev/null 2>&1 || true
if ! /usr/sbin/postfix -c "$postfix_dir" start >"$work/postfix-start.log" 2>&1; then
        echo "Postfix: could not start:"
        cat "$work/postfix-start.log"
        exit 0
fi
wait_tls "$pf_port"
postfix_rate=$(handshakes "$pf_port")
printf '%-32s %8s full handshakes/s\n' "Postfix $(/usr/sbin/postconf -d -h mail_version) (smtps)" \
        "$postfix_rate"
