/* queue-show.h: the queue listing that mailq, postqueue -p and -j print,
 * in Postfix's showq text format or as Postfix 3.1+ JSON lines. Shared by
 * postqueue (reading the queue itself) and postern-qmgr (which writes it
 * for users who cannot read the queue, through Queue1.List). */
#pragma once

#include <stdbool.h>
#include <stdio.h>

/* Writes the listing of every message queue below queue_dir_fd to out:
 * the text format with its header and "-- N Kbytes in M Requests." (or
 * "Mail queue is empty"), or one JSON object per message. Returns 0, or a
 * negative errno: -EACCES when a queue directory cannot be read (nothing
 * has been written then), other errors after a partial listing. */
int queue_show(int queue_dir_fd, bool json, FILE *out);
