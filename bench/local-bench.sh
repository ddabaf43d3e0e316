#!/bin/bash
# local-bench.sh: local Maildir delivery rate of postern-deliver-local, and of
# Postfix's local(8) on the same machine when Postfix is installed.
#
#   bench/local-bench.sh [-n MESSAGES] [-p PARALLEL] [-l SIZE] [-b BUILDDIR] [-d DIR] [-P]
#
# Defaults: 5000 messages of 4096 bytes, 1 recipient each, 4 Deliver calls in
# flight (like local_destination_concurrency_limit = 2 per recipient, with a
# few recipients). postern: the daemon runs under systemd-socket-activate
# with a private configuration; test-deliver-local-client (the stand-in
# queue manager) calls Delivery1.Deliver N times for one queue file, and the
# rate is calls per second, each an fsynced Maildir delivery in the home
# of a throw-away user. -P also times a private Postfix instance (its own
# config, queue and data directories, inet_interfaces = loopback-only,
# delivering to the same kind of Maildir): messages are injected with
# smtp-source first, then the instance is started with local delivery
# deferred until all are queued, and the rate is messages delivered per
# second by local(8). Needs root (useradd, Postfix). Everything is removed
# at the end. The working directory defaults to /var/tmp, a real disk.
set -euo pipefail

messages=5000
parallel=4
size=4096
here=$(cd "$(dirname "$0")/.." && pwd)
build=${POSTERN_BUILD_DIR:-$here/build}
parent=/var/tmp
postfix=no

while getopts "n:p:l:b:d:P" o; do
        case $o in
        n) messages=$OPTARG ;;
        p) parallel=$OPTARG ;;
        l) size=$OPTARG ;;
        b) build=$OPTARG ;;
        d) parent=$OPTARG ;;
        P) postfix=yes ;;
        *) echo "usage: $0 [-n messages] [-p parallel] [-l size] [-b builddir] [-d dir] [-P]" >&2
           exit 2 ;;
        esac
done

daemon=$build/src/deliver-local/postern-deliver-local
client=$build/src/deliver-local/test-deliver-local-client
[ -x "$daemon" ] && [ -x "$client" ] || { echo "build $daemon and $client first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (creates a user to deliver to)" >&2; exit 1; }

work=$(mktemp -d "$parent/postern-local-bench.XXXXXX")
chmod 755 "$work"
user=pbench$$
pid=
pf_conf=
cleanup() {
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
        [ -n "$pf_conf" ] && postfix -c "$pf_conf" stop >/dev/null 2>&1 || true
        userdel -r -f "$user" >/dev/null 2>&1 || true
        rm -rf "$work"
}
trap cleanup EXIT

useradd -m -d "$work/home/$user" -s /bin/sh "$user"
mkdir -p "$work/conf" "$work/run" "$work/queue/active" "$work/queue/incoming"
cat > "$work/conf/main.cf" <<CF
myhostname = bench.example
mydestination = \$myhostname, localhost
queue_directory = $work/queue
alias_maps =
home_mailbox = Maildir/
mail_owner = root
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

echo "postern-deliver-local: $messages messages of $(stat -c %s "$work/msg") bytes, $parallel in flight"
"$client" --socket "$work/run/deliver-local" --nexthop bench.example \
        --queue-dir "$work/queue/active" --message "$work/msg" --count "$messages" \
        --parallel "$parallel" "$user@bench.example" | grep rate
got=$(ls "$work/home/$user/Maildir/new" | wc -l)
echo "  Maildir messages: $got"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

[ "$postfix" = yes ] || exit 0
command -v postfix >/dev/null && command -v smtp-source >/dev/null ||
        { echo "Postfix or smtp-source not installed: skipping the comparison"; exit 0; }

rm -rf "$work/home/$user/Maildir"
pf_conf=$work/pf/conf
mkdir -p "$pf_conf" "$work/pf/queue" "$work/pf/data"
cp /etc/postfix/master.cf "$pf_conf/"
chown postfix "$work/pf/data"
port=$((20000 + $$ % 10000))
# Only smtpd on a private port; local(8) writes the same Maildir.
sed -i "s/^smtp      inet.*/127.0.0.1:$port inet n - y - - smtpd/" "$pf_conf/master.cf"
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
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
smtp-source -s 20 -m "$messages" -l "$size" -f bench@example.org -t "$user@bench.example" \
        -c "127.0.0.1:$port" >/dev/null
for _ in $(seq 600); do
        [ "$(find "$work/pf/queue/incoming" "$work/pf/queue/active" -type f | wc -l)" = 0 ] && break
        sleep 0.1
done
# Release local delivery and time it: make the deferred files due (their
# mtime is the next retry time) and restart the queue manager, which scans
# the deferred queue when it starts.
postconf -c "$pf_conf" -e defer_transports= >/dev/null
find "$work/pf/queue/deferred" -type f -exec touch -d '-1 min' {} +
start=$(date +%s.%N)
postfix -c "$pf_conf" reload >/dev/null 2>&1
for _ in $(seq 12000); do
        n=$( (find "$work/home/$user/Maildir/new" -type f 2>/dev/null || true) | wc -l)
        [ "$n" -ge "$messages" ] && break
        sleep 0.05
done
end=$(date +%s.%N)
echo "Postfix local(8): $messages messages ($size bytes via smtp-source), local_destination_concurrency_limit default"
awk -v n="$n" -v a="$start" -v b="$end" \
        'BEGIN { printf "  delivered=%d seconds=%.3f rate=%.1f/s\n", n, b - a, n / (b - a) }'
