#!/bin/bash
# queue-bench.sh: the queue with a million deferred messages. Generates the
# queue files directly (src/qmgr/queue-gen), then measures
#   - mailq (postqueue -p) over the whole queue, and postqueue -j;
#   - postern-qmgr: time from start to the first delivery of due mail, to
#     the delivery of all due mail and to the end of its first deferred
#     queue run, and its memory (RSS and PSS) then;
#   - how fast newly enqueued mail is delivered while the scan runs.
# Deliveries go to the test delivery agent (src/qmgr/test-delivery-agent).
#
# Usage: bench/queue-bench.sh [COUNT]   (default 1000000; DUE=1000 of them due)
# Environment: POSTERN_BUILD_DIR (default ./build), BENCH_DIR (default a new
# directory under /var/tmp, removed afterwards).
set -euo pipefail

N=${1:-1000000}
DUE=${DUE:-1000}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${POSTERN_BUILD_DIR:-$SRC/build}
DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/postern-queue-bench.XXXXXX)}
QMGR_PID= AGENT_PID=

cleanup() {
        [ -n "$QMGR_PID" ] && kill "$QMGR_PID" 2>/dev/null || true
        [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null || true
        wait 2>/dev/null || true
        rm -rf "$DIR"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.2f'; }
wait_until() {  # wait_until SECONDS COMMAND...
        local deadline=$(( $(date +%s) + $1 )); shift
        until "$@"; do
                [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out: $*" >&2; exit 1; }
                sleep 0.05
        done
}

mkdir -p "$DIR"/{conf,queue,run}
for d in maildrop incoming active deferred hold corrupt defer; do mkdir -p "$DIR/queue/$d"; done
cat > "$DIR/conf/main.cf" <<CF
myhostname = mx.bench.test
mydestination = \$myhostname
queue_directory = $DIR/queue
minimal_backoff_time = 3600s
maximal_backoff_time = 7200s
queue_run_delay = 3600s
max_idle = 3600s
CF
export POSTERN_CONFIG_DIR=$DIR/conf POSTERN_RUNTIME_DIR=$DIR/run POSTERN_LOG_TARGET=stderr

echo "queue-bench: $N deferred messages ($DUE due) in $DIR"
t=$(now)
P=4
for i in $(seq 0 $((P - 1))); do
        d=0; [ "$i" = 0 ] && d=$DUE
        "$BUILD/src/qmgr/queue-gen" -q "$DIR/queue" -n $((N / P)) -d "$d" &
done
wait
echo "generate:            $(since "$t") s"
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

t=$(now)
lines=$("$BUILD/src/tools/postqueue/postqueue" -p | tail -1)
echo "mailq (cold cache):  $(since "$t") s   ($lines)"
t=$(now)
"$BUILD/src/tools/postqueue/postqueue" -p > /dev/null
echo "mailq (warm cache):  $(since "$t") s"
t=$(now)
n=$("$BUILD/src/tools/postqueue/postqueue" -j | wc -l)
echo "postqueue -j:        $(since "$t") s   ($n objects)"

"$BUILD/src/qmgr/test-delivery-agent" --record "$DIR/deliveries" \
        --listen "$DIR/run/deliver-remote" --listen "$DIR/run/deliver-local" 2>/dev/null &
AGENT_PID=$!
wait_until 10 test -S "$DIR/run/deliver-local"
systemd-socket-activate -l "$DIR/run/qmgr" -E POSTERN_LOG_TARGET -E POSTERN_RUNTIME_DIR \
        -E POSTERN_CONFIG_DIR "$BUILD/src/qmgr/postern-qmgr" 2> "$DIR/qmgr.log" &
QMGR_PID=$!
wait_until 10 test -S "$DIR/run/qmgr"
sleep 0.2       # systemd-socket-activate listens right after bind
t=$(now)
# The first connection starts the daemon (a flush would force every
# deferred message out, which is not what a restart does).
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$DIR/run/qmgr"
wait_until 600 test -s "$DIR/deliveries"
echo "qmgr start to first delivery:     $(since "$t") s"
# A new message while the deferred queue run is going on.
id=$(cd "$SRC/tests" && python3 -c "import queue_helpers as h; print(h.new_queue_id())")
python3 - "$DIR/queue/incoming" "$id" <<PY
import os, sys
sys.path.insert(0, "$SRC/tests")
import queue_helpers as h
d, qid = sys.argv[1], sys.argv[2]
open(os.path.join(d, '.' + qid), 'wb').write(h.format_queue_file(qid, 'a@b.test', ['new@fresh.test'], 'Subject: new\n\nx\n'))
os.rename(os.path.join(d, '.' + qid), os.path.join(d, qid))
PY
t2=$(now)
# Announced like smtpd announces new mail (FlushId takes it from incoming/).
"$BUILD/src/tools/posternctl/posternctl" queue flush "$id" > /dev/null
wait_until 600 grep -q "new@fresh.test" "$DIR/deliveries"
echo "new message delivered during the run: $(since "$t2") s"
wait_until 600 bash -c "[ \$(grep -c ' sent ' '$DIR/deliveries') -ge $((DUE + 1)) ]"
echo "qmgr start to all $DUE due delivered: $(since "$t") s"
wait_until 1800 grep -q "Deferred queue run:" "$DIR/qmgr.log"
echo "qmgr start to end of queue run: $(since "$t") s   ($(grep -o 'Deferred queue run:.*' "$DIR/qmgr.log" | head -1))"
# systemd-socket-activate execs the daemon: same PID.
awk '/^Rss|^Pss/ {printf "qmgr %s %d kB\n", $1, $2}' "/proc/$QMGR_PID/smaps_rollup"
