#!/bin/bash
# local-bench.sh: local Maildir delivery rate of postern and, with -P, of
# Postfix's local(8) on the same machine, measured the same way, in
# interleaved rounds (postern, postfix, postern, ...), with the ratio of
# the best rounds.
#
#   bench/local-bench.sh [-m qmgr|direct] [-n MESSAGES] [-p PARALLEL] [-l SIZE]
#                        [-r ROUNDS] [-b BUILDDIR] [-d DIR] [-P]
#
# qmgr (the default): smtp-source puts MESSAGES messages of SIZE bytes for
# one throw-away user into postern-smtpd's queue while no queue manager
# runs; then postern-qmgr starts and the time runs until the user's
# Maildir/new holds them all. Deliveries go through postern-deliver-local
# (socket-activated, as root, home_mailbox = Maildir/) with the default
# local_destination_concurrency_limit (2 per recipient, as in Postfix),
# each an fsynced Maildir delivery. The CPU time of qmgr and of
# deliver-local (with its exited children) is printed per message.
# -P: a private Postfix instance (its own config, queue and data
# directories, inet_interfaces = loopback-only, delivering to the same
# Maildir) gets the same messages with smtp-source while local delivery is
# deferred (defer_transports = local); then the deferred files are made due
# and the instance reloaded, and the time runs likewise. Its CPU is that of
# its master and children.
# direct: test-deliver-local-client (a stand-in queue manager) calls
# Delivery1.Deliver N times for one queue file, PARALLEL (default 4) calls
# in flight; the rate is calls per second (no Postfix side).
# Defaults: 5000 messages of 4096 bytes, 3 rounds. Needs root (useradd,
# Postfix). Everything is removed at the end. The working directory (both
# queues and the user's home) is under DIR, by default /var/tmp, a real
# disk.
set -euo pipefail

messages=5000
parallel=4
size=4096
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}
parent=/var/tmp
postfix=no

mode=qmgr
rounds=3
while getopts "m:n:p:l:r:b:d:P" o; do
        case $o in
        m) mode=$OPTARG ;;
        r) rounds=$OPTARG ;;
        n) messages=$OPTARG ;;
        p) parallel=$OPTARG ;;
        l) size=$OPTARG ;;
        b) build=$OPTARG ;;
        d) parent=$OPTARG ;;
        P) postfix=yes ;;
        *) echo "usage: $0 [-m qmgr|direct] [-n messages] [-p parallel] [-l size] [-r rounds]" \
                "[-b builddir] [-d dir] [-P]" >&2
           exit 2 ;;
        esac
done

daemon=$build/src/deliver-local/postern-deliver-local
client=$build/src/deliver-local/test-deliver-local-client
smtpd=$build/src/smtpd/postern-smtpd
qmgr=$build/src/qmgr/postern-qmgr
[ -x "$daemon" ] && [ -x "$client" ] && [ -x "$smtpd" ] && [ -x "$qmgr" ] ||
        { echo "build $build first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (creates a user to deliver to)" >&2; exit 1; }

work=$(mktemp -d "$parent/postern-local-bench.XXXXXX")
chmod 755 "$work"
user=pbench$$
pid= spid= qpid=
pf_conf=
cleanup() {
        for p in $qpid $spid $pid; do
                kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
        done
        [ -n "$pf_conf" ] && postfix -c "$pf_conf" stop >/dev/null 2>&1 || true
        userdel -r -f "$user" >/dev/null 2>&1 || true
        rm -rf "$work"
}
trap cleanup EXIT

useradd -m -d "$work/home/$user" -s /bin/sh "$user"
mkdir -p "$work/conf/services.d" "$work/run" \
        "$work/queue"/{incoming,active,deferred,hold,corrupt,maildrop,defer,bounce}
cat > "$work/conf/main.cf" <<CF
myhostname = bench.example
mydestination = \$myhostname, localhost
mynetworks = 127.0.0.0/8
inet_protocols = ipv4
queue_directory = $work/queue
alias_maps =
home_mailbox = Maildir/
mail_owner = root
max_idle = 600s
CF

# A 4 KiB-ish message: headers and a body of 76-column lines.
{
        printf 'From: bench@example.org\nTo: %s@bench.example\nSubject: bench\n\n' "$user"
        body=$(head -c $((size * 3 / 4)) /dev/urandom | base64 -w 76)
        printf '%s\n' "${body:0:$((size - 80))}"
} > "$work/msg"

systemd-socket-activate -l "$work/run/deliver-local" -E POSTERN_RUNTIME_DIR="$work/run" \
        "$daemon" -c "$work/conf" >"$work/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$work/run/deliver-local" ] && break; sleep 0.05; done

ticks=$(getconf CLK_TCK)
# utime + stime of a process and its live children, plus its waited-for
# children (cutime + cstime), in clock ticks.
proc_cpu_all() {
        local total=0 p
        total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat")
        for p in $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
                [ -r "/proc/$p/stat" ] || continue
                total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
        done
        echo "$total"
}
maildir_count() { (find "$work/home/$user/Maildir/new" -type f 2>/dev/null || true) | wc -l; }

if [ "$mode" = direct ]; then
        echo "postern-deliver-local (direct): $messages messages of $(stat -c %s "$work/msg") bytes," \
             "$parallel in flight, load average $(cut -d' ' -f1-3 /proc/loadavg)"
        "$client" --socket "$work/run/deliver-local" --nexthop bench.example \
                --queue-dir "$work/queue/active" --message "$work/msg" --count "$messages" \
                --parallel "$parallel" "$user@bench.example" | grep rate
        echo "  Maildir messages: $(maildir_count)"
        exit 0
fi

command -v smtp-source >/dev/null || { echo "smtp-source (postfix) not installed" >&2; exit 1; }
free_port() {
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
systemd-socket-activate -l "127.0.0.1:$port" --fdname=smtpd -E POSTERN_LOG_TARGET=stderr \
        -E POSTERN_RUNTIME_DIR="$work/run" -E POSTERN_QMGR_SOCKET="$work/run/qmgr" \
        "$smtpd" --service=smtpd -c "$work/conf" 2>"$work/smtpd.log" &
spid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

if [ "$postfix" = yes ] && ! { command -v postfix >/dev/null && command -v smtp-source >/dev/null; }; then
        echo "Postfix or smtp-source not installed: postern only"
        postfix=no
fi
if [ "$postfix" = yes ]; then
        pf_conf=$work/pf/conf
        mkdir -p "$pf_conf" "$work/pf/queue" "$work/pf/data"
        cp /etc/postfix/master.cf "$pf_conf/"
        chown postfix "$work/pf/data"
        pf_port=$(free_port)
        # Only smtpd on a private port; local(8) writes the same Maildir.
        sed -i "s/^smtp      inet.*/127.0.0.1:$pf_port inet n - y - - smtpd/" "$pf_conf/master.cf"
        cat > "$pf_conf/main.cf" <<CF
compatibility_level = 3.6
myhostname = bench.example
mydestination = bench.example
queue_directory = $work/pf/queue
data_directory = $work/pf/data
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
home_mailbox = Maildir/
biff = no
defer_transports = local
smtpd_relay_restrictions = permit_mynetworks, reject
mynetworks = 127.0.0.0/8
maillog_file = $work/pf/maillog
CF
        postfix -c "$pf_conf" check >/dev/null 2>&1 || true
        postfix -c "$pf_conf" start >/dev/null 2>&1
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$pf_port") 2>/dev/null && break; sleep 0.1; done
fi

wait_delivered() {      # until Maildir/new holds all messages
        for _ in $(seq 12000); do
                [ "$(maildir_count)" -ge "$messages" ] && return 0
                sleep 0.05
        done
        echo "error: only $(maildir_count) of $messages messages delivered" >&2
        exit 1
}

# postern: queue with no queue manager running (the messages wait in
# incoming/), then start postern-qmgr and time the deliveries.
round_postern() {
        local queued cpu_d0 cpu_d1 cpu_q start end
        rm -rf "$work/home/$user/Maildir"
        smtp-source -s 20 -m "$messages" -l "$size" -f bench@example.org -t "$user@bench.example" \
                -c "127.0.0.1:$port" >/dev/null
        queued=$(find "$work/queue/incoming" -type f ! -name '.*' | wc -l)
        [ "$queued" -eq "$messages" ] || { echo "error: $queued of $messages queued" >&2; exit 1; }
        sync -f "$work/queue/incoming"
        cpu_d0=$(proc_cpu_all "$pid")
        start=$(date +%s.%N)
        POSTERN_RUNTIME_DIR="$work/run" POSTERN_LOG_TARGET=stderr \
                "$qmgr" -c "$work/conf" 2>>"$work/qmgr.log" &
        qpid=$!
        wait_delivered
        end=$(date +%s.%N)
        cpu_q=$(awk '{print $14 + $15}' "/proc/$qpid/stat")
        cpu_d1=$(proc_cpu_all "$pid")
        kill "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=
        awk -v r="$r" -v n="$messages" -v a="$start" -v b="$end" -v cq="$cpu_q" \
            -v cd="$((cpu_d1 - cpu_d0))" -v t="$ticks" 'BEGIN {
                printf "round %d postern: %5.0f msg/s (%.2f s), CPU per message: qmgr %.2f ms, " \
                       "deliver-local %.2f ms\n", r, n / (b - a), b - a,
                       cq * 1000 / t / n, cd * 1000 / t / n }'
        rate=$(echo "$messages / ($end - $start)" | bc -l)
}

# Postfix: queue with local delivery deferred, then make the deferred files
# due (their mtime is the next retry time) and reload, which starts a new
# queue manager that scans the deferred queue at once.
round_postfix() {
        local master cpu0 cpu1 start end
        rm -rf "$work/home/$user/Maildir"
        postconf -c "$pf_conf" -e defer_transports=local >/dev/null
        postfix -c "$pf_conf" reload >/dev/null 2>&1
        smtp-source -s 20 -m "$messages" -l "$size" -f bench@example.org -t "$user@bench.example" \
                -c "127.0.0.1:$pf_port" >/dev/null
        for _ in $(seq 600); do
                [ "$(find "$work/pf/queue/incoming" "$work/pf/queue/active" -type f | wc -l)" = 0 ] &&
                        [ "$(find "$work/pf/queue/deferred" -type f | wc -l)" -ge "$messages" ] && break
                sleep 0.1
        done
        postconf -c "$pf_conf" -e defer_transports= >/dev/null
        find "$work/pf/queue/deferred" -type f -exec touch -d '-1 min' {} +
        sync -f "$work/pf/queue/deferred"
        master=$(tr -d ' ' < "$work/pf/queue/pid/master.pid")
        cpu0=$(proc_cpu_all "$master")
        start=$(date +%s.%N)
        postfix -c "$pf_conf" reload >/dev/null 2>&1
        wait_delivered
        end=$(date +%s.%N)
        cpu1=$(proc_cpu_all "$master")
        awk -v r="$r" -v n="$messages" -v a="$start" -v b="$end" -v c="$((cpu1 - cpu0))" \
            -v t="$ticks" 'BEGIN {
                printf "round %d postfix: %5.0f msg/s (%.2f s), CPU per message (master and its " \
                       "children): %.2f ms\n", r, n / (b - a), b - a, c * 1000 / t / n }'
        rate=$(echo "$messages / ($end - $start)" | bc -l)
}

echo "local delivery: $messages messages of $size bytes to one user's Maildir, queues and home on" \
     "$(findmnt -n -o FSTYPE,SOURCE -T "$work" | tr -s ' '), load average $(cut -d' ' -f1-3 /proc/loadavg)"
best_postern=0 best_postfix=0
for r in $(seq "$rounds"); do
        round_postern
        [ "$(echo "$rate > $best_postern" | bc)" = 1 ] && best_postern=$rate
        if [ "$postfix" = yes ]; then
                round_postfix
                [ "$(echo "$rate > $best_postfix" | bc)" = 1 ] && best_postfix=$rate
        fi
done
printf "best of %d: postern %.0f msg/s" "$rounds" "$best_postern"
[ "$postfix" = yes ] && printf "; postfix %.0f msg/s; ratio %.2f" "$best_postfix" \
        "$(echo "$best_postern / $best_postfix" | bc -l)"
printf " (load average after: %s)\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
