#!/bin/bash
# relay-bench.sh: end-to-end relay throughput, smtp-source -> SMTP server ->
# queue manager -> SMTP client -> smtp-sink, all on loopback, for postern and,
# when stock Postfix is installed and we are root, for a private Postfix
# instance with the same load in the same run, interleaved (postern,
# postfix, postern, ...), with the ratio of the best rounds.
#
#   bench/relay-bench.sh [-m chain|direct] [-n MESSAGES] [-t RECIPIENTS] [-s SESSIONS]
#                        [-l SIZE] [-r ROUNDS] [-b BUILDDIR] [-d DIR] [-P]
#
# chain (the default): postern-smtpd (under systemd-socket-activate) ->
#   postern-qmgr -> postern-deliver-remote (socket-activated) -> smtp-sink,
#   with a private configuration, queue and runtime directory and
#   relayhost = [127.0.0.1]:SINKPORT; Postfix: smtpd -> cleanup -> qmgr ->
#   smtp -> its own smtp-sink, relayhost likewise (bench/postfix-instance.sh).
#   A round runs from the first message sent until the queue is empty and
#   smtp-sink has seen every message; it prints the rate, when the last
#   message was received, and the CPU time (utime + stime from
#   /proc/PID/stat, before and after the round) of each program per
#   message. For Postfix the CPU of its daemons that exited during the
#   round is in "exited" (the master's cutime + cstime).
# direct: one queue file handed N times to Delivery1.Deliver() by
#   test-deliver-client on one bus connection (one call at a time), so the
#   figure is the SMTP client's own: connection reuse, pipelining, DATA.
#
# Defaults: 5000 messages of 4096 bytes, 1 recipient (-t 10: ten recipients
# per message, all at the same destination), 10 smtp-source sessions, 3
# rounds; -P skips Postfix. Both servers make each message durable before
# the 250 reply. Everything started is stopped by PID and the work
# directory (under DIR, by default /var/tmp, a real disk; it holds both
# queues) is removed at the end.
set -euo pipefail

mode=chain
messages=5000
rcpts=1
sessions=10
size=4096
rounds=3
with_postfix=1
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}
parent=/var/tmp

while getopts "m:n:t:s:l:r:b:d:P" o; do
        case $o in
        m) mode=$OPTARG ;;
        n) messages=$OPTARG ;;
        t) rcpts=$OPTARG ;;
        s) sessions=$OPTARG ;;
        l) size=$OPTARG ;;
        r) rounds=$OPTARG ;;
        b) build=$OPTARG ;;
        d) parent=$OPTARG ;;
        P) with_postfix=0 ;;
        *) echo "usage: $0 [-m chain|direct] [-n messages] [-t recipients] [-s sessions]" \
                "[-l size] [-r rounds] [-b builddir] [-d dir] [-P]" >&2
           exit 2 ;;
        esac
done

. "$(dirname "$0")/postfix-instance.sh"
deliver=$build/src/deliver-remote/postern-deliver-remote
client=$build/src/deliver-remote/test-deliver-client
smtpd=$build/src/smtpd/postern-smtpd
qmgr=$build/src/qmgr/postern-qmgr
smtp_sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$deliver" ] || { echo "no $deliver: build first" >&2; exit 1; }
[ -x "$smtp_sink" ] || { echo "smtp-sink (postfix) not installed" >&2; exit 1; }
if [ "$mode" = chain ] && [ "$with_postfix" = 1 ] &&
   { [ ! -x /usr/sbin/postfix ] || [ "$(id -u)" != 0 ]; }; then
        echo "note: no stock Postfix (or not root): postern only" >&2
        with_postfix=0
fi

work=$(mktemp -d "$parent/postern-relay-bench.XXXXXX")
chmod 755 "$work"               # Postfix's daemons run as postfix
pids=()
cleanup() {
        postfix_stop "$work/postfix"
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

# start_sink NAME VAR: an smtp-sink on a free port, stored in VAR (not
# run in a subshell, so that its PID is recorded for the cleanup);
# smtp-sink drops root for nobody and counts messages (-c) on stdout, in
# NAME.out.
start_sink() {
        local port
        port=$(free_port)
        "$smtp_sink" -u nobody -c "127.0.0.1:$port" 256 >"$work/$1.out" 2>&1 &
        pids+=($!)
        wait_port "$port"
        printf -v "$2" '%s' "$port"
}
sunk() { tail -c 100 "$work/$1.out" | tr '\r' '\n' | grep -Eo '[0-9]+' | tail -1 || echo 0; }

mkdir -p "$work/conf/services.d" "$work/run" "$work/queue"/{incoming,active,deferred,hold,corrupt,maildrop,defer,bounce}
start_sink sink sink_port
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

export POSTERN_RUNTIME_DIR=$work/run
systemd-socket-activate -l "$work/run/deliver-remote" -E POSTERN_LOG_TARGET=stderr \
        -E POSTERN_RUNTIME_DIR "$deliver" -c "$work/conf" 2>"$work/deliver.log" &
dpid=$!
pids+=($dpid)
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
spid=$!
pids+=($spid)
wait_port "$smtpd_port"

if [ "$with_postfix" = 1 ]; then
        start_sink pf-sink pf_sink_port
        pf_port=$(free_port)
        POSTFIX_RELAYHOST="[127.0.0.1]:$pf_sink_port" postfix_start "$work/postfix" "$pf_port"
fi

# CPU snapshots: "program ticks" lines.
cpu_postern() {
        echo "smtpd $(proc_tree_cpu "$spid")"
        echo "qmgr $(proc_tree_cpu "$qpid")"
        echo "deliver-remote $(proc_tree_cpu "$dpid")"
}
cpu_postfix() {
        local m p
        m=$(tr -d ' ' < "$work/postfix/spool/pid/master.pid")
        awk '{ print "master", $14 + $15; print "exited", $16 + $17 }' "/proc/$m/stat"
        for p in $(cat "/proc/$m/task/$m/children" 2>/dev/null); do
                [ -r "/proc/$p/stat" ] || continue
                awk '{ gsub(/[()]/, "", $2); print $2, $14 + $15 }' "/proc/$p/stat" 2>/dev/null || true
        done
}
# cpu_report BEFORE AFTER: "total-ms-per-message (program ms, ...)".
cpu_report() {
        awk -v t="$ticks" -v n="$messages" 'NR == FNR { b[$1] += $2; next } { a[$1] += $2 }
                END {
                        for (k in a) { d = (a[k] - b[k]) * 1000 / t / n; tot += d
                                       if (d >= 0.005) s = s sprintf("%s%s %.2f", s ? ", " : "", k, d) }
                        printf "%.2f ms CPU per message (%s)", tot, s
                }' "$1" "$2"
}

# round NAME PORT SINK QUEUEDIR: one load; prints the rate, sets $rate.
round() {
        local name=$1 port=$2 sink=$3 qdir=$4 sink0 t0 t_in t1 left got deadline deferred
        local cpu0=$work/cpu0 cpu1=$work/cpu1
        sink0=$(sunk "$sink")
        "cpu_$name" > "$cpu0"
        t0=$(now)
        "$smtp_source" -s "$sessions" -l "$size" -m "$messages" -r "$rcpts" \
                -f sender@example.org -t user@example.net -c "127.0.0.1:$port" >/dev/null
        t_in=$(now)
        deadline=$((SECONDS + 900))
        while :; do
                left=$(find "$qdir/incoming" "$qdir/active" "$qdir/maildrop" -type f ! -name '.*' \
                        2>/dev/null | wc -l)
                got=$(( $(sunk "$sink") - sink0 ))
                [ "$left" -eq 0 ] && [ "$got" -ge "$messages" ] && break
                if [ $SECONDS -gt $deadline ]; then
                        echo "error: $name timed out with $left messages in the queue," \
                             "$got at smtp-sink" >&2
                        exit 1
                fi
                sleep 0.05
        done
        t1=$(now)
        "cpu_$name" > "$cpu1"
        deferred=$(find "$qdir/deferred" -type f | wc -l)
        rate=$(echo "$messages / ($t1 - $t0)" | bc -l)
        printf "round %d %-7s %5.0f msg/s (all received after %.2f s, relayed after %.2f s), %s" \
               "$r" "$name:" "$rate" "$(echo "$t_in - $t0" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" \
               "$(cpu_report "$cpu0" "$cpu1")"
        [ "$deferred" -gt 0 ] && printf ", %d deferred" "$deferred"
        printf "\n"
}

echo "relay chain: $messages messages of $size bytes, $rcpts recipient(s) each," \
     "$sessions smtp-source sessions, queues on $(findmnt -n -o FSTYPE,SOURCE -T "$work" | tr -s ' ')," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
best_postern=0 best_postfix=0
for r in $(seq "$rounds"); do
        round postern "$smtpd_port" sink "$work/queue"
        [ "$(echo "$rate > $best_postern" | bc)" = 1 ] && best_postern=$rate
        if [ "$with_postfix" = 1 ]; then
                round postfix "$pf_port" pf-sink "$work/postfix/spool"
                [ "$(echo "$rate > $best_postfix" | bc)" = 1 ] && best_postfix=$rate
        fi
done
printf "best of %d: postern %.0f msg/s" "$rounds" "$best_postern"
if [ "$with_postfix" = 1 ]; then
        printf "; postfix %s %.0f msg/s; ratio %.2f" \
                "$(/usr/sbin/postconf -c "$work/postfix/etc" -h mail_version)" "$best_postfix" \
                "$(echo "$best_postern / $best_postfix" | bc -l)"
fi
printf " (load average after: %s)\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
