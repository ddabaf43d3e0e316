#!/bin/bash
# security-table.sh: prints the "systemd-analyze security" exposure of every
# postern service as a Markdown table (unit, exposure, systemd's verdict),
# followed by Debian's postfix@.service when it is installed, for comparison.
# Run it where the units are installed and loaded: on the host, or inside
# the test container (nsenter -t LEADER -a bench/security-table.sh, or
# "tools/start" and then nsenter into its container).
# Usage: security-table.sh [UNIT...]   (default: all postern services)
set -euo pipefail

units=("$@")
if [ ${#units[@]} -eq 0 ]; then
        units=(postern-smtpd.service postern-submission.service postern-smtps.service
               postern-qmgr.service postern-deliver-remote.service
               postern-deliver-local.service postern-bounce.service postern-pickup.service)
        if systemctl cat postfix@.service >/dev/null 2>&1; then
                units+=(postfix@-.service)
        fi
fi

echo "| unit | exposure | verdict |"
echo "|---|---:|---|"
for u in "${units[@]}"; do
        line=$(systemd-analyze security --no-pager "$u" 2>/dev/null |
               sed -n 's/^→ Overall exposure level for [^:]*: //p')
        # "1.4 OK :-)" -> exposure and verdict
        exposure=${line%% *}
        verdict=${line#* }
        verdict=${verdict% *}
        echo "| $u | ${exposure:-?} | ${verdict:-not loaded} |"
done
