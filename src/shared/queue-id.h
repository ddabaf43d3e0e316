/* queue-id.h: queue IDs. A queue ID names a message in every queue
 * directory and in the logs. It is 16 characters of [0-9A-Za-z] (filename
 * safe, case matters): 6 characters of arrival seconds, 4 of microseconds,
 * both in base 62 with an alphabet in ASCII order so that IDs sort by
 * arrival time with strcmp(), then 6 characters of randomness that keep IDs
 * of the same microsecond, across processes, apart. Creating the queue file
 * with O_EXCL settles the remaining (astronomically small) chance of a
 * collision. */
#pragma once

#include <stdbool.h>
#include <sys/time.h>

#define QUEUE_ID_LEN 16
#define QUEUE_ID_SIZE (QUEUE_ID_LEN + 1)

/* Writes a new ID for the time tv (NULL: now) to buf, NUL-terminated. */
void queue_id_new(const struct timeval *tv, char buf[static QUEUE_ID_SIZE]);

/* Whether s is a well-formed queue ID (length and alphabet). Temporary
 * files, "." entries and foreign names in a queue directory fail this. */
bool queue_id_valid(const char *s);

/* The arrival time encoded in a valid ID. Returns 0 or -EINVAL. */
int queue_id_time(const char *s, struct timeval *ret);
