#!/bin/bash
# tls-bench.sh: full TLS handshakes per second on an implicit-TLS (smtps)
# port: postern-smtpd next to a private stock Postfix with the same
# certificate, in the same run, interleaved (postern, postfix, postern, ...),
# each loaded by a pool of parallel `openssl s_time -new` clients (a new
# session per connection, no resumption).
#
#   bench/tls-bench.sh [-t SECONDS] [-c CLIENTS] [-r ROUNDS] [-w WORKERS]
#                      [-b BUILDDIR] [-k ec|rsa] [-P]
#
# Defaults: 10 s per round, 8 parallel clients, 3 rounds, the best round of
# each server reported (every round is printed too), an EC P-256 key,
# smtpd_worker_processes = 0 (one worker per CPU). -P skips Postfix. The
# clients run on the same machine and take their share of the CPUs, the
# same for both servers. The Postfix instance (see postfix-instance.sh)
# needs root and the postfix user. Everything is removed at the end.
set -euo pipefail

seconds=10
clients=8
rounds=3
workers=0
keytype=ec
with_postfix=1
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}

while getopts "t:c:r:w:b:k:P" o; do
        case $o in
        t) seconds=$OPTARG ;;
        c) clients=$OPTARG ;;
        r) rounds=$OPTARG ;;
        w) workers=$OPTARG ;;
        b) build=$OPTARG ;;
        k) keytype=$OPTARG ;;
        P) with_postfix=0 ;;
        *) echo "usage: $0 [-t seconds] [-c clients] [-r rounds] [-w workers] [-b builddir]" \
                "[-k ec|rsa] [-P]" >&2; exit 2 ;;
        esac
done

. "$(dirname "$0")/postfix-instance.sh"
smtpd=$build/src/smtpd/postern-smtpd
[ -x "$smtpd" ] || { echo "no $smtpd: build first" >&2; exit 1; }
if [ "$with_postfix" = 1 ] && { [ ! -x /usr/sbin/postfix ] || [ "$(id -u)" != 0 ]; }; then
        echo "note: no stock Postfix (or not root): postern only" >&2
        with_postfix=0
fi

work=$(mktemp -d /var/tmp/postern-tls-bench.XXXXXX)
chmod 755 "$work"       # Postfix's daemons run as postfix
pid=
cleanup() {
        if [ -n "$pid" ]; then
                kill "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
        fi
        postfix_stop "$work/postfix"
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

# Runs the client pool against PORT; prints the handshakes per second, the
# sum over the clients of "N connections in T real seconds".
handshakes() {
        local i
        for i in $(seq "$clients"); do
                openssl s_time -connect "127.0.0.1:$1" -new -time "$seconds" \
                        >"$work/s_time.$i" 2>/dev/null &
        done
        wait
        cat "$work"/s_time.* | awk '/connections in .* real seconds/ { r += $1 / $4 }
                END { printf "%.0f", r }'
        rm -f "$work"/s_time.*
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
smtpd_worker_processes = $workers
smtpd_tls_cert_file = $work/cert.pem
smtpd_tls_key_file = $work/key.pem
CONF
echo "smtpd_tls_wrappermode = yes" > "$work/conf/services.d/smtps.cf"
port=$(free_port)
systemd-socket-activate -l "127.0.0.1:$port" --fdname=smtps -E POSTERN_LOG_TARGET=stderr \
        "$smtpd" --service=smtps -c "$work/conf" 2>"$work/smtpd.log" &
pid=$!
wait_tls "$port"

if [ "$with_postfix" = 1 ]; then
        pf_smtp=$(free_port)
        pf_port=$(free_port)
        postfix_start "$work/postfix" "$pf_smtp" "$pf_port" "$work/cert.pem" "$work/key.pem"
        wait_tls "$pf_port"
fi

best_postern=0 best_postfix=0
for r in $(seq "$rounds"); do
        rate=$(handshakes "$port")
        echo "round $r postern: $rate handshakes/s"
        [ "$rate" -gt "$best_postern" ] && best_postern=$rate
        if [ "$with_postfix" = 1 ]; then
                rate=$(handshakes "$pf_port")
                echo "round $r postfix: $rate handshakes/s"
                [ "$rate" -gt "$best_postfix" ] && best_postfix=$rate
        fi
done

nworkers=$(wc -w < "/proc/$pid/task/$pid/children")
printf "best of %d: postern-smtpd (smtps, %d workers): %d full handshakes/s" \
        "$rounds" "$nworkers" "$best_postern"
if [ "$with_postfix" = 1 ]; then
        printf "; postfix %s: %d; ratio %.2f" \
                "$(/usr/sbin/postconf -c "$work/postfix/etc" -h mail_version)" "$best_postfix" \
                "$(echo "$best_postern / $best_postfix" | bc -l)"
fi
printf " (key %s, %s, %d clients x %d s of openssl s_time -new)\n" "$keytype" \
        "$(openssl version | cut -d' ' -f1-2)" "$clients" "$seconds"
