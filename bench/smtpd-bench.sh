#!/bin/bash
# smtpd-bench.sh: load postern-smtpd with Postfix's smtp-source on loopback
# and, when stock Postfix is installed, a private Postfix instance with the
# same load in the same run, interleaved (postern, postfix, postern, ...),
# and report messages per second for each, the ratio, and postern's CPU
# time per message.
#
#   bench/smtpd-bench.sh [-n MESSAGES] [-s SESSIONS] [-l SIZE] [-r ROUNDS]
#                        [-w WORKERS] [-b BUILDDIR] [-q QUEUEDIR] [-P]
#
# Defaults: 20000 messages of 4096 bytes, 1 recipient, 20 parallel sessions,
# 3 rounds, smtpd_worker_processes = 0 (one worker per CPU); -P skips
# Postfix. The best round of each server is reported (other programs on the
# machine only ever make a round slower), every round is printed too.
#
# Both accept any local part (local_recipient_maps empty) and make each
# message durable before the 250 reply: postern
# fsyncs the queue file and its directory (group commit), Postfix's cleanup
# fsyncs the queue file. Postfix's queue manager hands every message to the
# discard transport, so Postfix does that work during the run too; postern
# has no queue manager running and leaves the files in incoming (removed
# between rounds). postern runs under systemd-socket-activate, Postfix under
# its own master; both have private configuration and queue directories (by
# default under /var/tmp, so that the fsync costs are those of a real disk)
# that are removed at the end. CPU time is utime + stime from /proc/PID/stat
# of the postern supervisor and its workers, before and after each round.
set -euo pipefail

messages=20000
sessions=20
size=4096
rounds=3
workers=0
with_postfix=1
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}
queue_parent=/var/tmp

while getopts "n:s:l:r:w:b:q:P" o; do
        case $o in
        n) messages=$OPTARG ;;
        s) sessions=$OPTARG ;;
        l) size=$OPTARG ;;
        r) rounds=$OPTARG ;;
        w) workers=$OPTARG ;;
        b) build=$OPTARG ;;
        q) queue_parent=$OPTARG ;;
        P) with_postfix=0 ;;
        *) echo "usage: $0 [-n messages] [-s sessions] [-l size] [-r rounds] [-w workers]" \
                "[-b builddir] [-q queuedir] [-P]" >&2; exit 2 ;;
        esac
done

. "$(dirname "$0")/postfix-instance.sh"
smtpd=$build/src/smtpd/postern-smtpd
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$smtpd" ] || { echo "no $smtpd: build first" >&2; exit 1; }
[ -x "$smtp_source" ] || { echo "smtp-source (postfix) not installed" >&2; exit 1; }
if [ "$with_postfix" = 1 ] && { [ ! -x /usr/sbin/postfix ] || [ "$(id -u)" != 0 ]; }; then
        echo "note: no stock Postfix (or not root): postern only" >&2
        with_postfix=0
fi

work=$(mktemp -d "$queue_parent/postern-bench.XXXXXX")
chmod 755 "$work"        # Postfix's daemons run as postfix
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

mkdir -p "$work/conf/services.d" "$work/queue"/{incoming,active,deferred,hold,corrupt,maildrop}
cat > "$work/conf/main.cf" <<CONF
myhostname = bench.example.test
mydestination = bench.example.test, example.test
local_recipient_maps =
queue_directory = $work/queue
max_idle = 600s
smtpd_worker_processes = $workers
CONF

port=$(free_port)
mkdir -p "$work/run"
systemd-socket-activate -l "127.0.0.1:$port" --fdname=smtpd -E POSTERN_LOG_TARGET=stderr \
        -E POSTERN_RUNTIME_DIR="$work/run" \
        "$smtpd" --service=smtpd -c "$work/conf" 2>"$work/smtpd.log" &
pid=$!
# Wake the daemon up (systemd-socket-activate execs it on the first connection).
for _ in $(seq 100); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
                read -r -t 5 _ <&3 || true
                exec 3>&-
                break
        fi
        sleep 0.05
done

if [ "$with_postfix" = 1 ]; then
        pf_port=$(free_port)
        postfix_start "$work/postfix" "$pf_port"
fi

ticks=$(getconf CLK_TCK)
load() {        # load PORT: runs smtp-source, prints the elapsed seconds
        local t0 t1
        t0=$(date +%s.%N)
        "$smtp_source" -s "$sessions" -l "$size" -m "$messages" -f sender@example.org \
                -t user@example.test -c "127.0.0.1:$1" >/dev/null
        t1=$(date +%s.%N)
        echo "$t1 - $t0" | bc -l
}

best_postern=0 best_postfix=0 best_cpu=
for r in $(seq "$rounds"); do
        find "$work/queue/incoming" -maxdepth 1 -type f ! -name '.*' -delete
        # Not part of the round: the journal commits of those deletions.
        sync -f "$work/queue/incoming"
        cpu0=$(proc_tree_cpu "$pid")
        el=$(load "$port")
        cpu1=$(proc_tree_cpu "$pid")
        queued=$(find "$work/queue/incoming" -maxdepth 1 -type f ! -name '.*' | wc -l)
        [ "$queued" -eq "$messages" ] || {
                echo "error: postern queued $queued of $messages messages" >&2; exit 1; }
        rate=$(echo "$messages / $el" | bc -l)
        cpu_ms=$(echo "($cpu1 - $cpu0) * 1000 / $ticks / $messages" | bc -l)
        printf "round %d postern: %.0f msg/s (%.2f s), %.3f ms CPU per message\n" \
                "$r" "$rate" "$el" "$cpu_ms"
        if [ "$(echo "$rate > $best_postern" | bc)" = 1 ]; then
                best_postern=$rate
        fi
        if [ -z "$best_cpu" ] || [ "$(echo "$cpu_ms < $best_cpu" | bc)" = 1 ]; then
                best_cpu=$cpu_ms
        fi
        if [ "$with_postfix" = 1 ]; then
                el=$(load "$pf_port")
                rate=$(echo "$messages / $el" | bc -l)
                printf "round %d postfix: %.0f msg/s (%.2f s)\n" "$r" "$rate" "$el"
                if [ "$(echo "$rate > $best_postfix" | bc)" = 1 ]; then
                        best_postfix=$rate
                fi
                # Let its queue manager finish the discards before postern's turn.
                for _ in $(seq 600); do
                        [ -z "$(find "$work/postfix/spool/incoming" "$work/postfix/spool/active" \
                                -type f 2>/dev/null | head -1)" ] && break
                        sleep 0.1
                done
        fi
done

nworkers=$(wc -w < "/proc/$pid/task/$pid/children")
printf "best of %d: postern-smtpd (%d workers): %.0f msg/s, %.3f ms CPU per message" \
        "$rounds" "$nworkers" "$best_postern" "$best_cpu"
if [ "$with_postfix" = 1 ]; then
        printf "; postfix %s: %.0f msg/s; ratio %.2f" "$(/usr/sbin/postconf -c "$work/postfix/etc" -h mail_version)" \
                "$best_postfix" "$(echo "$best_postern / $best_postfix" | bc -l)"
fi
printf " (%d messages of %d bytes, 1 recipient, %d sessions)\n" "$messages" "$size" "$sessions"
