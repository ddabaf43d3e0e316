/* log-msgid.h: the MESSAGE_ID of every kind of event postern logs, defined
 * once here and explained in postern.catalog (installed to the systemd
 * catalog directory, shown by journalctl -x). A new event gets a new id
 * (systemd-id128 new) and a catalog entry in the same commit. */
#pragma once

#define MSGID_CONFIG_ERROR      "8d4c1a2e6f3b4b0c9a7e5d1f2c3b4a51"
#define MSGID_CONFIG_WARNING    "8d4c1a2e6f3b4b0c9a7e5d1f2c3b4a52"
#define MSGID_DAEMON_START      "8d4c1a2e6f3b4b0c9a7e5d1f2c3b4a53"
#define MSGID_DAEMON_STOP       "8d4c1a2e6f3b4b0c9a7e5d1f2c3b4a54"
#define MSGID_CONNECT           "5f0e9b3a1c2d4e6f8a7b9c0d1e2f3a61"
#define MSGID_DISCONNECT        "5f0e9b3a1c2d4e6f8a7b9c0d1e2f3a62"
#define MSGID_REJECT            "5f0e9b3a1c2d4e6f8a7b9c0d1e2f3a63"
#define MSGID_QUEUED_CLIENT     "5f0e9b3a1c2d4e6f8a7b9c0d1e2f3a64"
#define MSGID_QUEUED            "5f0e9b3a1c2d4e6f8a7b9c0d1e2f3a65"
#define MSGID_MESSAGE_ID        "ec303682e8684f64985158d2413ad17d"
#define MSGID_DELIVERED         "2b7c4d9e0f1a4b3c8d6e5f4a3b2c1d71"
#define MSGID_DEFERRED          "2b7c4d9e0f1a4b3c8d6e5f4a3b2c1d72"
#define MSGID_BOUNCED           "2b7c4d9e0f1a4b3c8d6e5f4a3b2c1d73"
#define MSGID_REMOVED           "2b7c4d9e0f1a4b3c8d6e5f4a3b2c1d74"
#define MSGID_SMTP_TLS          "cc3394d7c1fa426a8f68d7096974dcd7"
#define MSGID_SMTP_CONN_FAILED  "749838768f4f494081ad92adca8eecfd"
#define MSGID_BOUNCE_NOTIFICATION "a0735720416442cb900f887e31614808"
#define MSGID_BOUNCE_DISCARDED  "89041521610846b3b8d3731acb8fb11b"
#define MSGID_SMTPD_NOTICE      "79890b2bc9934193bd2245dacb8b6195"
