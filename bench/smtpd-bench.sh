#!/bin/bash
# smtpd-bench.sh: load postern-smtpd with Postfix's smtp-source on loopback
# and report messages per second and daemon CPU time per message.
#
#   bench/smtpd-bench.sh [-n MESSAGES] [-s SESSIONS] [-l SIZE] [-b BUILDDIR] [-q QUEUEDIR]
#
# Defaults: 20000 messages of 4096 bytes, 1 recipient, 20 parallel sessions.
# The daemon runs under systemd-socket-activate with a private configuration
# and a private queue directory (by default on the file system of /var/tmp,
# so that the fsync costs are those of a real disk); both are removed at the
# end. CPU time comes from utime + stime in /proc/PID/stat before and after.
set -euo pipefail

messages=20000
sessions=20
size=4096
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}
queue_parent=/var/tmp

while getopts "n:s:l:b:q:" o; do
        case $o in
        n) messages=$OPTARG ;;
        s) sessions=$OPTARG ;;
        l) size=$OPTARG ;;
        b) build=$OPTARG ;;
        q) queue_parent=$OPTARG ;;
        *) echo "usage: $0 [-n messages] [-s sessions] [-l size] [-b builddir] [-q queuedir]" >&2; exit 2 ;;
        esac
done

smtpd=$build/src/smtpd/postern-smtpd
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$smtpd" ] || { echo "no $smtpd: build first" >&2; exit 1; }
[ -x "$smtp_source" ] || { echo "smtp-source (postfix) not installed" >&2; exit 1; }

work=$(mktemp -d "$queue_parent/postern-bench.XXXXXX")
pid=
cleanup() {
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
        rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/conf/services.d" "$work/queue"/{incoming,active,deferred,hold,corrupt,maildrop}
cat > "$work/conf/main.cf" <<CONF
myhostname = bench.example.test
mydestination = bench.example.test, example.test
queue_directory = $work/queue
max_idle = 600s
CONF

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
systemd-socket-activate -l "127.0.0.1:$port" --fdname=smtpd -E POSTERN_LOG_TARGET=stderr \
        "$smtpd" --service=smtpd -c "$work/conf" 2>"$work/smtpd.log" &
pid=$!
# Wake the daemon up (systemd-socket-activate execs it on the first connection).
for _ in $(seq 100); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
                read -r -t 5 banner <&3 || true
                exec 3>&-
                break
        fi
        sleep 0.05
done

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
cpu0=$(cpu)
t0=$(date +%s.%N)
"$smtp_source" -s "$sessions" -l "$size" -m "$messages" -f sender@example.org \
        -t user@example.test -c "127.0.0.1:$port" >/dev/null
t1=$(date +%s.%N)
cpu1=$(cpu)
queued=$(find "$work/queue/incoming" -type f ! -name '.*' | wc -l)

awk -v n="$messages" -v q="$queued" -v t0="$t0" -v t1="$t1" -v c0="$cpu0" -v c1="$cpu1" \
    -v hz="$ticks" -v s="$sessions" -v l="$size" 'BEGIN {
        el = t1 - t0
        printf "postern-smtpd: %d messages of %d bytes, %d sessions: %.2f s, %.0f msg/s, " \
               "%.3f ms CPU per message, %d queue files\n", n, l, s, el, n / el,
               (c1 - c0) * 1000 / hz / n, q
}'
[ "$queued" -eq "$messages" ] || { echo "error: $queued of $messages messages queued" >&2; exit 1; }
