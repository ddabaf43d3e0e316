/* posternctl-check-units.h: the part of "posternctl check" that compares
 * the listening socket units with main.cf (posternctl-check-units.c). */
#pragma once

#include "diag.h"

/* Reads postern-smtpd.socket, postern-submission.socket and
 * postern-smtps.socket with their drop-ins (from unit_dir alone when it is
 * set, for tests; otherwise from the system's unit directories, the way
 * systemd finds them) and adds a warning to d, located at the
 * ListenStream= line or at the parameter in main.cf or services.d, for
 * each disagreement with that service's inet_interfaces and
 * inet_protocols. config_dir NULL means the default directory. Returns the
 * number of socket units found; a missing unit is not an error (the role
 * may not be installed), nor is an unreadable configuration (the caller
 * reports that). */
int check_socket_units(Diag *d, const char *config_dir, const char *unit_dir);
