/* anvil.c: the shared per-client counter table (see anvil.h for the
 * design). Layout: AnvilHeader, then ANVIL_SLOTS AnvilSlot records, then
 * ANVIL_POOL AnvilOwner records, all fixed-size so that every process
 * agrees on the offsets; the magic string carries the layout version.
 *
 * A slot records the connections of up to ANVIL_OWNERS processes inline;
 * the connections of further processes go to the shared owner pool, each
 * entry naming its slot (slot->pooled says how many do, so that slots
 * without any skip the pool scan). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "anvil.h"

#define ANVIL_MAGIC "PSTANV02"
#define ANVIL_SLOTS 8192u
#define ANVIL_OWNERS 8
#define ANVIL_POOL 4096u
#define ANVIL_PROBES 32

typedef struct AnvilHeader {
        char magic[8];
        uint32_t n_slots;
        uint32_t slot_size;
        uint32_t n_pool;
        uint32_t pad;
} AnvilHeader;

typedef struct AnvilOwner {
        uint32_t slot;          /* slot index + 1; 0: free */
        int32_t pid;
        uint32_t count;
} AnvilOwner;

typedef struct AnvilSlot {
        uint8_t used;
        uint8_t family;
        uint8_t addr[16];
        uint32_t pooled;        /* pool entries of this slot */
        struct {
                int32_t pid;
                uint32_t count;
        } owners[ANVIL_OWNERS];
        struct {
                uint64_t start_ms;
                uint64_t window_ms;
                uint32_t count;
        } rate[_ANVIL_RATE_MAX];
} AnvilSlot;

struct Anvil {
        int fd;
        void *map;
        size_t size;
        AnvilHeader *header;
        AnvilSlot *slots;
        AnvilOwner *pool;
};

static size_t anvil_size(void) {
        return sizeof(AnvilHeader) + (size_t) ANVIL_SLOTS * sizeof(AnvilSlot) +
               (size_t) ANVIL_POOL * sizeof(AnvilOwner);
}

static uint64_t now_ms(void) {
        struct timespec ts;
        /* CLOCK_MONOTONIC is one clock for every process of this boot. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

int anvil_open(const char *path, Anvil **ret) {
        _cleanup_close_ int fd = -1;
        struct stat st;
        Anvil *a;
        void *map;
        int r = 0;

        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX) < 0)
                return -errno;
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto unlock;
        }
        if ((size_t) st.st_size != anvil_size() && ftruncate(fd, (off_t) anvil_size()) < 0) {
                r = -errno;
                goto unlock;
        }
        map = mmap(NULL, anvil_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
                r = -errno;
                goto unlock;
        }
        {
                AnvilHeader *h = map;
                if (memcmp(h->magic, ANVIL_MAGIC, 8) != 0 || h->n_slots != ANVIL_SLOTS ||
                    h->slot_size != sizeof(AnvilSlot) || h->n_pool != ANVIL_POOL) {
                        /* New or from another layout: start empty. */
                        memset(map, 0, anvil_size());
                        h->n_slots = ANVIL_SLOTS;
                        h->slot_size = sizeof(AnvilSlot);
                        h->n_pool = ANVIL_POOL;
                        memcpy(h->magic, ANVIL_MAGIC, 8);
                }
        }
        a = calloc(1, sizeof(*a));
        if (!a) {
                munmap(map, anvil_size());
                r = -ENOMEM;
                goto unlock;
        }
        a->map = map;
        a->size = anvil_size();
        a->header = map;
        a->slots = (AnvilSlot *) ((char *) map + sizeof(AnvilHeader));
        a->pool = (AnvilOwner *) (a->slots + ANVIL_SLOTS);
        (void) flock(fd, LOCK_UN);
        a->fd = steal_fd(fd);
        *ret = a;
        return 0;
unlock:
        (void) flock(fd, LOCK_UN);
        return r;
}

Anvil *anvil_close(Anvil *a) {
        if (!a)
                return NULL;
        if (a->map)
                munmap(a->map, a->size);
        if (a->fd >= 0)
                close(a->fd);
        free(a);
        return NULL;
}

static uint32_t addr_hash(const InetAddr *x) {
        /* FNV-1a over the address bytes. */
        uint32_t h = 2166136261u;
        unsigned n = inet_family_bits(x->family) / 8;
        h = (h ^ (uint32_t) x->family) * 16777619u;
        for (unsigned i = 0; i < n; i++)
                h = (h ^ x->bytes[i]) * 16777619u;
        return h;
}

static bool slot_is(const AnvilSlot *s, const InetAddr *x) {
        return s->used && s->family == x->family &&
               memcmp(s->addr, x->bytes, inet_family_bits(x->family) / 8) == 0;
}

static bool pid_gone(int32_t pid) {
        return kill(pid, 0) < 0 && errno == ESRCH;
}

static uint32_t slot_id(Anvil *a, const AnvilSlot *s) {
        return (uint32_t) (s - a->slots) + 1;
}

static void pool_release(Anvil *a, AnvilOwner *o) {
        AnvilSlot *s = &a->slots[o->slot - 1];
        if (s->pooled > 0)
                s->pooled--;
        *o = (AnvilOwner) {0};
}

/* Drops the connections of processes that are gone; returns the total,
 * inline owners and pool entries. */
static unsigned slot_connections(Anvil *a, AnvilSlot *s) {
        unsigned total = 0;
        for (unsigned i = 0; i < ANVIL_OWNERS; i++) {
                if (s->owners[i].count == 0)
                        continue;
                if (pid_gone(s->owners[i].pid)) {
                        s->owners[i].count = 0;
                        s->owners[i].pid = 0;
                        continue;
                }
                total += s->owners[i].count;
        }
        if (s->pooled > 0) {
                uint32_t id = slot_id(a, s);
                for (unsigned i = 0; i < ANVIL_POOL; i++) {
                        AnvilOwner *o = &a->pool[i];
                        if (o->slot != id)
                                continue;
                        if (o->count == 0 || pid_gone(o->pid)) {
                                pool_release(a, o);
                                continue;
                        }
                        total += o->count;
                }
        }
        return total;
}

static bool slot_idle(Anvil *a, AnvilSlot *s, uint64_t now) {
        if (!s->used)
                return true;
        if (slot_connections(a, s) > 0)
                return false;
        for (unsigned i = 0; i < _ANVIL_RATE_MAX; i++)
                if (s->rate[i].count > 0 && now - s->rate[i].start_ms < s->rate[i].window_ms)
                        return false;
        return true;
}

/* Finds the slot of x, or claims an idle one. Called under the lock. */
static AnvilSlot *slot_get(Anvil *a, const InetAddr *x, uint64_t now) {
        uint32_t h = addr_hash(x);
        AnvilSlot *free_slot = NULL;

        for (unsigned i = 0; i < ANVIL_PROBES; i++) {
                AnvilSlot *s = &a->slots[(h + i) % ANVIL_SLOTS];
                if (slot_is(s, x))
                        return s;
                if (!free_slot && slot_idle(a, s, now))
                        free_slot = s;
        }
        if (!free_slot)
                return NULL;
        /* Idle: any pool entry left is dead or empty. */
        if (free_slot->pooled > 0)
                for (unsigned i = 0; i < ANVIL_POOL; i++)
                        if (a->pool[i].slot == slot_id(a, free_slot))
                                a->pool[i] = (AnvilOwner) {0};
        memset(free_slot, 0, sizeof(*free_slot));
        free_slot->used = 1;
        free_slot->family = (uint8_t) x->family;
        memcpy(free_slot->addr, x->bytes, inet_family_bits(x->family) / 8);
        return free_slot;
}

static unsigned rate_add(AnvilSlot *s, AnvilRate rate, unsigned n, uint64_t window_ms,
                         uint64_t now) {
        if (s->rate[rate].count == 0 || now - s->rate[rate].start_ms >= s->rate[rate].window_ms ||
            s->rate[rate].window_ms != window_ms) {
                s->rate[rate].start_ms = now;
                s->rate[rate].window_ms = window_ms;
                s->rate[rate].count = 0;
        }
        s->rate[rate].count += n;
        return s->rate[rate].count;
}

static int lock(Anvil *a) {
        while (flock(a->fd, LOCK_EX) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

static void unlock(Anvil *a) {
        (void) flock(a->fd, LOCK_UN);
}

int anvil_connect(Anvil *a, const InetAddr *client, uint64_t window_ms, unsigned *ret_count,
                  unsigned *ret_rate) {
        uint64_t now = now_ms();
        int32_t pid = (int32_t) getpid();
        AnvilSlot *s;
        int r;

        r = lock(a);
        if (r < 0)
                return r;
        s = slot_get(a, client, now);
        if (!s) {
                unlock(a);
                return -ENOSPC;
        }
        (void) slot_connections(a, s);
        {
                int mine = -1, empty = -1;
                for (int i = 0; i < ANVIL_OWNERS; i++) {
                        if (s->owners[i].count > 0 && s->owners[i].pid == pid)
                                mine = i;
                        else if (s->owners[i].count == 0 && empty < 0)
                                empty = i;
                }
                if (mine < 0)
                        mine = empty;
                if (mine >= 0) {
                        s->owners[mine].pid = pid;
                        s->owners[mine].count++;
                } else {
                        /* Every inline owner is another live process: the
                         * shared pool, or nothing counted and an error (the
                         * caller fails closed). */
                        uint32_t id = slot_id(a, s);
                        AnvilOwner *o = NULL, *free_o = NULL;
                        for (unsigned i = 0; i < ANVIL_POOL && !o; i++) {
                                AnvilOwner *p = &a->pool[i];
                                if (p->slot == id && p->pid == pid && p->count > 0)
                                        o = p;
                                else if (!free_o && (p->slot == 0 || p->count == 0 ||
                                                     pid_gone(p->pid)))
                                        free_o = p;
                        }
                        if (!o && free_o) {
                                if (free_o->slot != 0)
                                        pool_release(a, free_o);
                                o = free_o;
                                *o = (AnvilOwner) {.slot = id, .pid = pid};
                                s->pooled++;
                        }
                        if (!o) {
                                unlock(a);
                                return -EUSERS;
                        }
                        o->count++;
                }
        }
        *ret_count = slot_connections(a, s);
        *ret_rate = rate_add(s, ANVIL_RATE_CONNECT, 1, window_ms, now);
        unlock(a);
        return 0;
}

int anvil_disconnect(Anvil *a, const InetAddr *client) {
        uint32_t h = addr_hash(client);
        int32_t pid = (int32_t) getpid();
        int r;

        r = lock(a);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < ANVIL_PROBES; i++) {
                AnvilSlot *s = &a->slots[(h + i) % ANVIL_SLOTS];
                if (!slot_is(s, client))
                        continue;
                for (int j = 0; j < ANVIL_OWNERS; j++)
                        if (s->owners[j].pid == pid && s->owners[j].count > 0) {
                                s->owners[j].count--;
                                unlock(a);
                                return 0;
                        }
                for (unsigned j = 0; s->pooled > 0 && j < ANVIL_POOL; j++) {
                        AnvilOwner *o = &a->pool[j];
                        if (o->slot == slot_id(a, s) && o->pid == pid && o->count > 0) {
                                if (--o->count == 0)
                                        pool_release(a, o);
                                break;
                        }
                }
                break;
        }
        unlock(a);
        return 0;
}

int anvil_rate(Anvil *a, const InetAddr *client, AnvilRate rate, unsigned n, uint64_t window_ms,
               unsigned *ret_rate) {
        uint64_t now = now_ms();
        AnvilSlot *s;
        int r;

        if (rate < 0 || rate >= _ANVIL_RATE_MAX)
                return -EINVAL;
        r = lock(a);
        if (r < 0)
                return r;
        s = slot_get(a, client, now);
        if (!s) {
                unlock(a);
                return -ENOSPC;
        }
        *ret_rate = rate_add(s, rate, n, window_ms, now);
        unlock(a);
        return 0;
}
