#!/bin/bash
# relay-bench.sh: relay throughput of postern's SMTP client, with Postfix's
# smtp-sink as the far end on loopback.
#
#   bench/relay-bench.sh [-m chain|direct] [-n MESSAGES] [-s SESSIONS] [-l SIZE] [-b BUILDDIR]
#
# chain (the default): smtp-source -> postern-smtpd -> postern-qmgr ->
#   postern-deliver-remote -> smtp-sink, all under systemd-socket-activate
#   (qmgr binds its own socket) with a private configuration, queue and
#   runtime directory; relayhost = [127.0.0.1]:SINKPORT. The time runs from
#   the first message sent until the queue is empty and smtp-sink has seen
#   every message.
# direct: one queue file handed N times to Delivery1.Deliver() by
#   test-deliver-client on one bus connection (one call at a time), so the
#   figure is the SMTP client's own: connection reuse, pipelining, DATA.
#
# Defaults: 5000 messages of 4096 bytes, 1 recipient, 10 smtp-source
# sessions. Everything started is stopped by PID and the work directory is
# removed at the end.
set -euo pipefail

mode=chain
messages=5000
sessions=10
size=4096
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}

while getopts "m:n:s:l:b:" o; do
        case $o in
        m) mode=$OPTARG ;;
        n) messages=$OPTARG ;;
        s) sessions=$OPTARG ;;
        l) size=$OPTARG ;;
        b) build=$OPTARG ;;
        *) echo "usage: $0 [-m chain|direct] [-n messages] [-s sessions] [-l size] [-b builddir]" >&2
           exit 2 ;;
        esac
done

deliver=$build/src/deliver-remote/postern-deliver-remote
client=$build/src/deliver-remote/test-deliver-client
smtpd=$build/src/smtpd/postern-smtpd
qmgr=$build/src/qmgr/postern-qmgr
smtp_sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$deliver" ] || { echo "no $deliver: build first" >&2; exit 1; }
[ -x "$smtp_sink" ] || { echo "smtp-sink (postfix) not installed" >&2; exit 1; }

work=$(mktemp -d /var/tmp/postern-relay-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
        for p in "${pids[@]}"; do
                kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
        done
        rm -rf "$work"
}
trap cleanup EXIT

free_port() {
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
        for _ in $(seq 200); do
                if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
                        read -r -t 5 _banner <&3 || true
                        exec 3>&-
                        return 0
                fi
                sleep 0.05
        done
        echo "port $1 did not open" >&2
        return 1
}

mkdir -p "$work/conf/services.d" "$work/run" "$work/queue"/{incoming,active,deferred,hold,corrupt,maildrop,defer,bounce}
sink_port=$(free_port)
cat > "$work/conf/main.cf" <<CONF
myhostname = bench.example.test
mydomain = example.test
mydestination = bench.example.test
mynetworks = 127.0.0.0/8
queue_directory = $work/queue
relayhost = [127.0.0.1]:$sink_port
inet_protocols = ipv4
max_idle = 600s
CONF

# smtp-sink drops root for nobody; it counts messages with -c on stdout.
"$smtp_sink" -u nobody -c "127.0.0.1:$sink_port" 256 >"$work/sink.out" 2>&1 &
pids+=($!)
wait_port "$sink_port"

export POSTERN_RUNTIME_DIR=$work/run
systemd-socket-activate -l "$work/run/deliver-remote" -E POSTERN_LOG_TARGET=stderr \
        -E POSTERN_RUNTIME_DIR "$deliver" -c "$work/conf" 2>"$work/deliver.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/run/deliver-remote" ] && break; sleep 0.05; done

ticks=$(getconf CLK_TCK)
now() { date +%s.%N; }

if [ "$mode" = direct ]; then
        [ -x "$client" ] || { echo "no $client: build first" >&2; exit 1; }
        python3 - "$work/msg" "$size" <<'PY'
import os, random, string, sys, time
d, size = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
qid = ''.join(random.choice(string.ascii_letters + string.digits) for _ in range(16))
body = ('x' * 72 + '\n') * max(1, size // 73)
content = ('From: sender@example.org\nTo: user@example.net\nSubject: bench\n\n' + body).encode()
env = ('id=%s\ntime=%d.000000\nsize=%d\nsender=sender@example.org\nbody=7BIT\n'
       'rcpt=- - - user@example.net\nend=\n' % (qid, time.time(), len(content))).encode()
hdr = (b'POSTERNQ %04d %016x %016x %08x' % (1, len(content), len(env), 0)).ljust(63) + b'\n'
open(os.path.join(d, qid), 'wb').write(hdr + content + env)
PY
        q=$(ls "$work/msg"/*)
        # Warm up: start the daemon and open the connection.
        "$client" "$work/run/deliver-remote" "$q" smtp "" >/dev/null
        "$client" "$work/run/deliver-remote" "$q" smtp "" --count "$messages"
        exit 0
fi

[ -x "$qmgr" ] && [ -x "$smtpd" ] || { echo "no postern-qmgr/postern-smtpd: use -m direct" >&2; exit 1; }
[ -x "$smtp_source" ] || { echo "smtp-source (postfix) not installed" >&2; exit 1; }
"$qmgr" -c "$work/conf" 2>"$work/qmgr.log" &
qpid=$!
pids+=($qpid)
for _ in $(seq 100); do [ -S "$work/run/qmgr" ] && break; sleep 0.05; done
[ -S "$work/run/qmgr" ] || { echo "postern-qmgr did not start:" >&2; cat "$work/qmgr.log" >&2; exit 1; }

smtpd_port=$(free_port)
systemd-socket-activate -l "127.0.0.1:$smtpd_port" --fdname=smtpd -E POSTERN_LOG_TARGET=stderr \
        -E POSTERN_RUNTIME_DIR -E "POSTERN_QMGR_SOCKET=$work/run/qmgr" \
        "$smtpd" --service=smtpd -c "$work/conf" 2>"$work/smtpd.log" &
pids+=($!)
wait_port "$smtpd_port"

sunk() { tail -c 100 "$work/sink.out" | tr '\r' '\n' | grep -Eo '[0-9]+' | tail -1 || echo 0; }
sink0=$(sunk)
t0=$(now)
"$smtp_source" -s "$sessions" -l "$size" -m "$messages" -f sender@example.org \
        -t user@example.net -c "127.0.0.1:$smtpd_port" >/dev/null
t_in=$(now)
deadline=$((SECONDS + 600))
while :; do
        left=$(find "$work/queue/incoming" "$work/queue/active" -type f ! -name '.*' | wc -l)
        got=$(( $(sunk) - sink0 ))
        [ "$left" -eq 0 ] && [ "$got" -ge "$messages" ] && break
        if [ $SECONDS -gt $deadline ]; then
                echo "error: timed out with $left messages in the queue, $got at smtp-sink" >&2
                exit 1
        fi
        sleep 0.1
done
t1=$(now)
deferred=$(find "$work/queue/deferred" -type f | wc -l)
awk -v n="$messages" -v t0="$t0" -v ti="$t_in" -v t1="$t1" -v s="$sessions" -v l="$size" \
    -v d="$deferred" 'BEGIN {
        printf "relay chain: %d messages of %d bytes, %d smtp-source sessions: received in " \
               "%.2f s, relayed in %.2f s: %.0f msg/s end to end, %d deferred\n",
               n, l, s, ti - t0, t1 - t0, n / (t1 - t0), d
}'
