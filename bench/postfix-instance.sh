# postfix-instance.sh: sourced by the benchmarks to run a private, stock
# Postfix (3.7, installed but not configured) next to postern for the same
# load in the same run. postfix_start DIR PORT [SMTPS_PORT CERT KEY] sets up
# DIR/etc, DIR/spool and DIR/data, a master.cf with an smtpd inet service on
# 127.0.0.1:PORT (and, with the TLS arguments, a wrapper-mode smtpd on
# SMTPS_PORT) plus the services Postfix's accept path needs: cleanup,
# trivial-rewrite, qmgr and the discard transport for every recipient, so
# that mail is accepted with Postfix's normal durability (cleanup fsyncs the
# queue file before the 250) and then thrown away. With POSTFIX_RELAYHOST
# set (e.g. [127.0.0.1]:2525) mail is relayed there by Postfix's smtp(8)
# client instead (relay-bench.sh). Logs go to DIR/maillog through postlogd,
# not to the system log. postfix_stop DIR stops it.

postfix_start() {
        local dir=$1 port=$2 smtps_port=${3:-} cert=${4:-} key=${5:-}
        mkdir -p "$dir/etc" "$dir/spool" "$dir/data"
        chmod 755 "$dir" "$dir/etc" "$dir/spool"
        chown postfix "$dir/data"
        : > "$dir/etc/main.cf"
        /usr/sbin/postconf -c "$dir/etc" -e \
                "compatibility_level = 3.6" \
                "queue_directory = $dir/spool" \
                "data_directory = $dir/data" \
                "mail_owner = postfix" \
                "setgid_group = postdrop" \
                "inet_interfaces = 127.0.0.1" \
                "inet_protocols = ipv4" \
                "myhostname = bench.example.test" \
                "mydestination = bench.example.test, example.test" \
                "local_recipient_maps =" \
                "alias_maps =" \
                "local_transport = discard" \
                "default_transport = discard" \
                "relay_transport = discard" \
                "maillog_file = $dir/maillog" \
                "smtpd_tls_cert_file = $cert" \
                "smtpd_tls_key_file = $key" \
                "smtpd_tls_security_level = ${cert:+may}" \
                "smtpd_tls_session_cache_database =" \
                "default_process_limit = 200"
        if [ -n "${POSTFIX_RELAYHOST:-}" ]; then
                /usr/sbin/postconf -c "$dir/etc" -e \
                        "relayhost = $POSTFIX_RELAYHOST" \
                        "mynetworks = 127.0.0.0/8" \
                        "mydestination = bench.example.test" \
                        "default_transport = smtp" \
                        "relay_transport = smtp"
        fi
        cat > "$dir/etc/master.cf" <<MASTER
127.0.0.1:$port inet n - n - - smtpd
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
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
MASTER
        if [ -n "$smtps_port" ]; then
                echo "127.0.0.1:$smtps_port inet n - n - - smtpd -o smtpd_tls_wrappermode=yes" \
                        >> "$dir/etc/master.cf"
        fi
        /usr/sbin/postfix -c "$dir/etc" start >"$dir/start.log" 2>&1 || {
                cat "$dir/start.log" >&2
                return 1
        }
        # Wait for the listener.
        for _ in $(seq 100); do
                if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                        return 0
                fi
                sleep 0.05
        done
        echo "postfix did not start listening on $port" >&2
        return 1
}

postfix_stop() {
        local dir=$1
        [ -f "$dir/etc/main.cf" ] && /usr/sbin/postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
}

# Sum of utime + stime (clock ticks) of a process and its live children.
proc_tree_cpu() {
        local pid=$1 total=0 p
        for p in $pid $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
                [ -r "/proc/$p/stat" ] || continue
                total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
        done
        echo "$total"
}
