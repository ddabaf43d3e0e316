/* queue-id.c: time-sortable queue IDs (see queue-id.h). The random part
 * comes from a per-process xorshift generator seeded by getrandom(), mixed
 * with a counter, so that no system call is spent per ID. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "queue-id.h"

static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
#define BASE 62

static void encode(uint64_t v, char *out, size_t width) {
        for (size_t i = width; i > 0; i--) {
                out[i - 1] = alphabet[v % BASE];
                v /= BASE;
        }
}

static int decode_char(char c) {
        const char *p = c ? strchr(alphabet, c) : NULL;
        return p ? (int) (p - alphabet) : -1;
}

/* Process-wide generator state: IDs are made by one thread (the event
 * loop), and a fork re-seeds because the pid changes. */
static uint64_t rng_state;
static pid_t rng_pid;

static uint64_t next_random(void) {
        pid_t pid = getpid();
        if (rng_state == 0 || rng_pid != pid) {
                uint64_t seed = 0;
                if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed)) {
                        struct timeval tv;
                        gettimeofday(&tv, NULL);
                        seed = ((uint64_t) tv.tv_usec << 32) ^ (uint64_t) tv.tv_sec;
                }
                rng_state = (seed ^ ((uint64_t) pid << 40)) | 1;
                rng_pid = pid;
        }
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

void queue_id_new(const struct timeval *tv, char buf[static QUEUE_ID_SIZE]) {
        struct timeval now;
        if (!tv) {
                gettimeofday(&now, NULL);
                tv = &now;
        }
        encode((uint64_t) tv->tv_sec, buf, 6);
        encode((uint64_t) tv->tv_usec, buf + 6, 4);
        encode(next_random() % 56800235584ULL /* 62^6 */, buf + 10, 6);
        buf[QUEUE_ID_LEN] = 0;
}

bool queue_id_valid(const char *s) {
        for (size_t i = 0; i < QUEUE_ID_LEN; i++)
                if (decode_char(s[i]) < 0)
                        return false;
        return s[QUEUE_ID_LEN] == 0;
}

int queue_id_time(const char *s, struct timeval *ret) {
        uint64_t sec = 0, usec = 0;
        if (!queue_id_valid(s))
                return -EINVAL;
        for (size_t i = 0; i < 6; i++)
                sec = sec * BASE + (uint64_t) decode_char(s[i]);
        for (size_t i = 6; i < 10; i++)
                usec = usec * BASE + (uint64_t) decode_char(s[i]);
        if (usec >= 1000000)
                return -EINVAL;
        ret->tv_sec = (time_t) sec;
        ret->tv_usec = (suseconds_t) usec;
        return 0;
}
