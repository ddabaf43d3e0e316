#!/bin/bash
# deps.sh: installs what postern needs to build, run and test on Debian 12
# (as root). Safe to run again; quiet when everything is present.
set -euo pipefail

build_deps=(meson ninja-build pkg-config gcc clang libsystemd-dev libssl-dev libpcre2-dev
            libc-ares-dev libdb5.3-dev)
run_deps=(systemd systemd-container dbus openssl ssl-cert db5.3-util)
test_deps=(python3 python3-pytest swaks libnet-ssleay-perl mandoc groff-base dovecot-core dovecot-lmtpd dnsmasq
           unbound ldnsutils
           iproute2 util-linux procps strace)

missing=()
for p in "${build_deps[@]}" "${run_deps[@]}" "${test_deps[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# Postfix is installed (without starting it) only for its smtp-source and
# smtp-sink load tools and as the reference in bench/ and the map
# compatibility tests; its own services stay off.
if ! dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q 'install ok installed'; then
        missing+=(postfix)
fi

if [ ${#missing[@]} -gt 0 ] || [ "${POSTERN_DEPS_FORCE:-}" = 1 ]; then
        export DEBIAN_FRONTEND=noninteractive
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        # Keep the distribution from starting any service it installs.
        policy_created=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
                chmod +x /usr/sbin/policy-rc.d
                policy_created=1
        fi
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        if [ -n "$policy_created" ]; then
                rm -f /usr/sbin/policy-rc.d
        fi
        # The services of what was installed here for the tests stay off
        # after a reboot too: Postfix would take port 25 from postern,
        # dnsmasq and unbound port 53. (Services that were there before are
        # the administrator's and left alone.)
        quiet=()
        for p in "${missing[@]}"; do
                case $p in
                postfix) quiet+=(postfix.service) ;;
                dnsmasq) quiet+=(dnsmasq.service) ;;
                dovecot-core) quiet+=(dovecot.service dovecot.socket) ;;
                unbound) quiet+=(unbound.service unbound-resolvconf.service) ;;
                esac
        done
        if [ ${#quiet[@]} -gt 0 ]; then
                systemctl --root=/ disable --quiet "${quiet[@]}" 2>/dev/null || true
        fi
fi

# The default main.cf names the distribution's self-signed certificate.
if [ ! -e /etc/ssl/certs/ssl-cert-snakeoil.pem ]; then
        make-ssl-cert generate-default-snakeoil
fi
