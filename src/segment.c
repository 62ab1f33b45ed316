/* SPDX-License-Identifier: MIT */
/*
 * segment.c: the shared-memory object itself: names, create (O_EXCL, header
 * written last), open (validated against fstat before anything past the header is touched),
 * close and unlink.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "event.h"
#include "handle.h"
#include "lane.h"
#include "reclaim.h"
#include "redeliver.h"
#include "registry.h"
#include "segment.h"

int shmq_normalize_name(const char *name, char *out, size_t outsz)
{
	if (!name)
		return -EINVAL;
	const char *n = name[0] == '/' ? name + 1 : name;
	size_t len = strlen(n);
	if (len == 0 || strchr(n, '/') || !strcmp(n, ".") || !strcmp(n, ".."))
		return -EINVAL;
	if (len + 1 > SHMQ_NAME_MAX || len + 2 > outsz)
		return -ENAMETOOLONG;
	out[0] = '/';
	memcpy(out + 1, n, len + 1);
	return 0;
}

int shmq_shm_open_regular(const char *n, int flags, struct stat *st)
{
	int fd = shm_open(n, flags | O_CLOEXEC, 0);
	if (fd < 0) /* glibc turns the kernel's EISDIR into EINVAL (POSIX's code for a bad name, which
		     * a normalised n is not) */
		return errno == EINVAL ? -EISDIR : -errno;
	int err = fstat(fd, st) < 0 ? -errno : 0;
	if (!err && !S_ISREG(st->st_mode))
		err = S_ISDIR(st->st_mode) ? -EISDIR : -EPROTO;
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

/* The table a config gets: none without a window; else as asked, or 2 x capacity (at least 64,
 * a power of two). */
static uint32_t dedup_entries_for(const struct shmq_config *c)
{
	if (!c->dedup_window_ms)
		return 0;
	if (c->dedup_entries)
		return c->dedup_entries;
	/* 2 x capacity rounded up to a power of two (a capacity of 3 lanes is not one) */
	uint64_t n = 64;
	while (n < 2ULL * c->capacity && n < SHMQ_DEDUP_ENTRIES_MAX)
		n *= 2;
	return (uint32_t)n;
}

struct layout {
	uint64_t parts_off, slots_off, dedup_off, holders_off, total;
};

static void layout_of(uint32_t capacity, uint32_t slot_size, uint32_t dedup_entries, struct layout *l)
{
	l->parts_off = SHMQ_HDR_SIZE;
	l->slots_off = l->parts_off + (uint64_t)SHMQ_MAX_PARTICIPANTS * SHMQ_PART_SIZE;
	l->dedup_off = l->slots_off + (uint64_t)capacity * slot_size;
	l->holders_off = l->dedup_off + dedup_table_size(dedup_entries);
	l->total = l->holders_off + (uint64_t)capacity * SHMQ_HOLDER_SIZE;
}

void shmq_hdr_config(const struct shmq_hdr *h, struct shmq_config *c)
{
	*c = (struct shmq_config){
		.capacity = h->capacity,
		.slot_size = h->slot_size,
		.lease_ms = h->lease_ms,
		.max_deliveries = h->max_deliveries,
		.retry_base_ms = h->retry_base_ms,
		.retry_max_ms = h->retry_max_ms,
		.mode = h->mode,
		.dlq_max = h->dlq_max,
		.reclaim_interval_ms = h->reclaim_interval_ms,
		.dedup_window_ms = h->dedup_window_ms,
		.dedup_entries = h->dedup_entries,
		.lanes = h->lanes,
		.dispatch = h->dispatch,
	};
	memcpy(c->weights, h->weights, sizeof(c->weights));
}

uint64_t shmq_segment_size(const struct shmq_config *cfg)
{
	struct layout l;
	layout_of(cfg->capacity, cfg->slot_size, dedup_entries_for(cfg), &l);
	return l.total;
}

/* The calling process's time namespace: the offsets of CLOCK_MONOTONIC and CLOCK_BOOTTIME in ns,
 * from /proc/self/timens_offsets (zeros where the file does not exist: a kernel without time
 * namespaces, every process in the initial one), and the namespace's inode. The file shows the
 * namespace the process's children get: after unshare(CLONE_NEWTIME) that is not the process's
 * own (/proc/self/ns/time and time_for_children differ), and then its own offsets cannot be read:
 * *known = 0 and only the inode identifies its clock. */
struct timens {
	int64_t mono, boot;
	uint64_t ino;
	int known;
};

static uint64_t ns_ino(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static void timens_self(struct timens *t)
{
	char buf[512];
	t->mono = t->boot = 0;
	t->ino = ns_ino("/proc/self/ns/time");
	uint64_t children = ns_ino("/proc/self/ns/time_for_children");
	t->known = !t->ino || !children || t->ino == children;
	if (!t->known)
		return;
	int fd = open("/proc/self/timens_offsets", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* one line per clock: "<name or clock id> <seconds> <nanoseconds>" */
	for (char *line = buf, *next; line; line = next) {
		char clock[32];
		if ((next = strchr(line, '\n')))
			*next++ = '\0';
		long long sec, nsec;
		if (sscanf(line, "%31s %lld %lld", clock, &sec, &nsec) != 3)
			continue;
		int64_t ns = (int64_t)sec * 1000000000LL + nsec;
		if (!strcmp(clock, "monotonic") || !strcmp(clock, "1"))
			t->mono = ns;
		else if (!strcmp(clock, "boottime") || !strcmp(clock, "7"))
			t->boot = ns;
	}
}

/* Open-time check: every deadline and not-before time in the segment is on its creator's
 * CLOCK_MONOTONIC, so a participant whose clock is offset from it would requeue fresh leases (or
 * never expire any). -EXDEV when our time-namespace offsets differ from the creator's. Where
 * either side's offsets are unknown (see timens_self), only the creator's own namespace is
 * accepted: two namespaces with equal offsets keep equal clocks, but an unknown offset may be
 * anything. */
static int timens_check(const struct shmq_hdr *h)
{
	struct timens t;
	timens_self(&t);
	if (!t.known || h->timens_offsets_unknown)
		return t.ino && t.ino == h->timens_ino ? 0 : -EXDEV;
	return t.mono == h->timens_mono_ns && t.boot == h->timens_boot_ns ? 0 : -EXDEV;
}

/* The creator's side of timens_check. */
static void timens_stamp(struct shmq_hdr *h)
{
	struct timens t;
	timens_self(&t);
	h->timens_mono_ns = t.mono;
	h->timens_boot_ns = t.boot;
	h->timens_ino = t.ino;
	h->timens_offsets_unknown = !t.known;
}

void shmq_format(void *base, const struct shmq_config *cfg)
{
	struct shmq_hdr *h = base;
	h->version = SHMQ_LAYOUT_VERSION;
	h->hdr_size = SHMQ_HDR_SIZE;
	struct layout l;
	uint32_t dedup_entries = dedup_entries_for(cfg);
	layout_of(cfg->capacity, cfg->slot_size, dedup_entries, &l);
	h->total_size = l.total;
	h->parts_off = l.parts_off;
	h->slots_off = l.slots_off;
	h->dedup_off = l.dedup_off;
	h->holders_off = l.holders_off;
	h->dedup_entries = dedup_entries;
	h->dedup_window_ms = cfg->dedup_window_ms;
	h->max_participants = SHMQ_MAX_PARTICIPANTS;
	h->capacity = cfg->capacity;
	h->slot_size = cfg->slot_size;
	h->lease_ms = cfg->lease_ms;
	h->max_deliveries = cfg->max_deliveries;
	h->retry_base_ms = cfg->retry_base_ms;
	h->retry_max_ms = cfg->retry_max_ms;
	h->mode = cfg->mode;
	h->creator_pid = getpid();
	h->reclaim_interval_ms = cfg->reclaim_interval_ms;
	h->dlq_max = cfg->dlq_max ? cfg->dlq_max : (cfg->capacity / 4 ? cfg->capacity / 4 : 1);
	h->created_ns = now_ns();
	timens_stamp(h);
	h->lanes = lanes_of(cfg->lanes);
	h->dispatch = cfg->dispatch;
	for (uint32_t i = 0; i < h->lanes; i++)
		h->weights[i] = cfg->weights[i] ? cfg->weights[i] : 1;
	atomic_init(&h->redeliver, rd_make(REDELIVER_NONE, 0));
	uint32_t lane_cap = cfg->capacity / h->lanes;
	lane_format(&(struct shmq_lane_view){.slots = (unsigned char *)base + h->slots_off,
					     .lane = h->lane,
					     .slot_size = cfg->slot_size,
					     .lanes = h->lanes,
					     .lane_mask = lane_cap - 1,
					     .lane_shift = (uint32_t)__builtin_ctz(lane_cap)});
	/* pairs with the acquire load in shmq_validate_header: whoever sees the magic sees the rest */
	atomic_store_explicit(&h->magic, SHMQ_MAGIC, memory_order_release);
}

/* Reports through fn (when not NULL) every rule the header breaks. Returns 0, -EPROTO or
 * -EPROTONOSUPPORT. Stops early only when the rest cannot be read as a shmq header at all. */
int shmq_header_check(const struct shmq_hdr *h, uint64_t file_size, shmq_hdr_report_fn fn, void *ctx)
{
	int err = 0;
#define BAD(...)                                                                                             \
	do {                                                                                                 \
		if (fn)                                                                                      \
			fn(ctx, __VA_ARGS__);                                                                \
		err = -EPROTO;                                                                               \
	} while (0)
	if (file_size < SHMQ_HDR_SIZE) {
		BAD("segment is %llu bytes, smaller than the %u-byte header", (unsigned long long)file_size,
		    SHMQ_HDR_SIZE);
		return err;
	}
	uint64_t magic = atomic_load_explicit(&h->magic, memory_order_acquire);
	if (magic != SHMQ_MAGIC) {
		BAD("magic is 0x%llx, not 0x%llx: not a shmq segment (or not initialised)",
		    (unsigned long long)magic, (unsigned long long)SHMQ_MAGIC);
		return err;
	}
	if (h->version != SHMQ_LAYOUT_VERSION) {
		if (fn)
			fn(ctx, "layout version %u, this build reads version %u", h->version,
			   SHMQ_LAYOUT_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (h->hdr_size != SHMQ_HDR_SIZE)
		BAD("header size is %u, not %u", h->hdr_size, SHMQ_HDR_SIZE);
	if (h->max_participants != SHMQ_MAX_PARTICIPANTS)
		BAD("max participants is %u, not %u", h->max_participants, SHMQ_MAX_PARTICIPANTS);
	struct shmq_config c;
	shmq_hdr_config(h, &c);
	if (shmq_config_rules(&c, fn, ctx))
		err = -EPROTO;
	if (h->dlq_max == 0)
		BAD("dead letters kept is 0 (creation sets at least 1)");
	if ((h->dedup_window_ms == 0) != (h->dedup_entries == 0))
		BAD("dedup window %u ms with %u table entries (both or neither must be 0)",
		    h->dedup_window_ms, h->dedup_entries);
	if (h->lanes == 0)
		BAD("lanes is 0 (creation sets at least 1)");
	for (uint32_t i = 0; i < h->lanes && i < SHMQ_LANES_MAX; i++)
		if (h->weights[i] == 0)
			BAD("weight of lane %u is 0 (creation sets at least 1)", i);
	if (!capacity_ok(h->capacity, h->lanes) || !slot_size_ok(h->slot_size) ||
	    (h->dedup_entries && !is_pow2(h->dedup_entries)) || h->dedup_entries > SHMQ_DEDUP_ENTRIES_MAX)
		return err; /* the offsets below are computed from them */
	struct layout l;
	layout_of(h->capacity, h->slot_size, h->dedup_entries, &l);
	uint64_t total = l.total;
	if (h->parts_off != l.parts_off)
		BAD("participants offset is %llu, not %llu", (unsigned long long)h->parts_off,
		    (unsigned long long)l.parts_off);
	if (h->slots_off != l.slots_off)
		BAD("slots offset is %llu, not %llu", (unsigned long long)h->slots_off,
		    (unsigned long long)l.slots_off);
	if (h->dedup_off != l.dedup_off)
		BAD("dedup table offset is %llu, not %llu", (unsigned long long)h->dedup_off,
		    (unsigned long long)l.dedup_off);
	if (h->holders_off != l.holders_off)
		BAD("holder records offset is %llu, not %llu", (unsigned long long)h->holders_off,
		    (unsigned long long)l.holders_off);
	if (h->total_size != total)
		BAD("recorded size is %llu bytes, the layout needs %llu", (unsigned long long)h->total_size,
		    (unsigned long long)total);
	if (file_size != total) /* truncated, or grown by someone else */
		BAD("segment is %llu bytes, its layout needs %llu (truncated or resized)",
		    (unsigned long long)file_size, (unsigned long long)total);
#undef BAD
	return err;
}

int shmq_validate_header(const struct shmq_hdr *h, uint64_t file_size)
{
	return shmq_header_check(h, file_size, NULL, NULL);
}

/* h is a validated private copy of the header: nothing the handle uses for bounds is re-read
 * from the segment, where another process could change it after validation. */
static void handle_init(shmq_t *q, unsigned char *base, uint64_t size, int fd, const struct shmq_hdr *h)
{
	q->base = base;
	q->hdr = (struct shmq_hdr *)base;
	q->size = size;
	q->fd = fd;
	q->capacity = h->capacity;
	q->lanes = h->lanes;
	q->lane_mask = h->capacity / h->lanes - 1;
	q->lane_shift = (uint32_t)__builtin_ctz(h->capacity / h->lanes);
	q->dispatch = h->dispatch;
	/* a one-lane key-hash queue too: its one lane has one consumer at a time */
	q->uses_lanes = h->lanes > 1 || h->dispatch == SHMQ_DISPATCH_KEY_HASH;
	/* each handle starts at a random lane: one-shot senders (a `shmq send` each) would
	 * otherwise all fill lane 0 */
	atomic_init(&q->rr_next.own, random_u32() % q->lanes * RR_RUN);
	atomic_init(&q->rr_next.shared, random_u32() % q->lanes * RR_RUN);
	memcpy(q->weights, h->weights, sizeof(q->weights));
	q->slot_size = h->slot_size;
	q->max_payload = h->slot_size - SHMQ_SLOT_HEADER;
	q->slots = base + h->slots_off;
	q->parts = base + h->parts_off;
	q->max_parts = h->max_participants;
	q->dlq_max = h->dlq_max;
	q->lease_ms = h->lease_ms;
	q->max_deliveries = h->max_deliveries;
	q->retry_base_ms = h->retry_base_ms;
	q->retry_max_ms = h->retry_max_ms;
	q->reclaim_interval_ms = h->reclaim_interval_ms;
	q->dedup = h->dedup_entries ? base + h->dedup_off : NULL;
	q->holders = (_Atomic uint64_t *)(base + h->holders_off);
	q->dedup_mask = h->dedup_entries ? h->dedup_entries - 1 : 0;
	q->dedup_window_ms = h->dedup_window_ms;
	q->created_ns = h->created_ns;
	q->pid = getpid();
	q->view = (struct shmq_lane_view){
		.slots = q->slots,
		.lane = q->hdr->lane,
		.slot_size = q->slot_size,
		.lanes = q->lanes,
		.lane_mask = q->lane_mask,
		.lane_shift = q->lane_shift,
		.owner = q->owner,
		.max_owner = q->max_parts,
		.alive = shmq_owner_alive,
		.ctx = q,
	};
}

/* Claims a participant record for q. With none free for long enough, a reclaim pass requeues what
 * dead owners held and frees their records; then look once more, taking a record freed just now
 * if need be. The pass runs here, above the registry, which never calls a policy. */
static int attach(shmq_t *q)
{
	int err = shmq_part_attach(q, 0);
	if (err != -EUSERS)
		return err;
	shmq_reclaim_pass(q, NULL);
	return shmq_part_attach(q, 1);
}

int shmq_create(const char *name, const struct shmq_config *cfg, shmq_t **out)
{
	struct shmq_config def;
	int err;
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!cfg) {
		shmq_config_init(&def);
		cfg = &def;
	}
	if ((err = shmq_config_validate(cfg)))
		return err;
	shmq_t *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->settings_mu, NULL); /* holds nothing to free on Linux */
	if ((err = shmq_normalize_name(name, q->name, sizeof(q->name))))
		goto fail_free;

	uint64_t total = shmq_segment_size(cfg);
	int fd = shm_open(q->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, cfg->mode);
	if (fd < 0) {
		err = -errno;
		goto fail_free;
	}
	/* the umask applies to shm_open too: set the mode the config asked for */
	if (fchmod(fd, cfg->mode) < 0) {
		err = -errno;
		goto fail_unlink;
	}
	/* fallocate, not just ftruncate: a full /dev/shm must fail here with ENOSPC, not later with
	 * SIGBUS on first touch of a page */
	if ((err = posix_fallocate(fd, 0, (off_t)total))) {
		err = -err;
		goto fail_unlink;
	}
	void *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		err = -errno;
		goto fail_unlink;
	}

	shmq_format(base, cfg);
	handle_init(q, base, total, fd, base);

	if ((err = attach(q))) {
		munmap(base, total);
		/* -ENOENT: NAME was unlinked (and perhaps made anew) meanwhile: not ours to unlink */
		if (err == -ENOENT)
			goto fail_close;
		goto fail_unlink;
	}
	close(fd); /* the mapping keeps the object; our lock has a description of its own */
	*out = q;
	return 0;

fail_unlink:
	shm_unlink(q->name);
fail_close:
	close(fd);
fail_free:
	free(q);
	return err;
}

void shmq_open_options_init(struct shmq_open_options *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->trust_uid = (uid_t)-1;
	o->trust_gid = (gid_t)-1;
}

/* Open-time check of who made the object behind fd (see struct shmq_open_options): ours and not
 * world-writable, or owned by the trusted user, or of the trusted group. 0 or -EPERM. fstat of
 * our descriptor, not stat of the name: the object checked is the one we map. */
static int owner_check(int fd, const struct shmq_open_options *o)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	int trusted = (o->trust_uid != (uid_t)-1 && st.st_uid == o->trust_uid) ||
		      (o->trust_gid != (gid_t)-1 && st.st_gid == o->trust_gid);
	int ours = st.st_uid == geteuid() && !(st.st_mode & S_IWOTH);
	return trusted || ours ? 0 : -EPERM;
}

int shmq_map_segment(const char *name, int writable, const struct shmq_open_options *trust,
		     struct shmq_mapping *m)
{
	int err;
	struct stat st;
	char n[SHMQ_NAME_MAX + 2];
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if ((err = shmq_normalize_name(name, n, sizeof(n))))
		return err;
	/* our own open file description: OFD locks taken through it die with this handle only */
	int fd = shmq_shm_open_regular(n, writable ? O_RDWR : O_RDONLY, &st);
	if (fd < 0)
		return fd;
	if (trust && (err = owner_check(fd, trust)))
		goto fail_close;
	/* a creator may be between O_EXCL and writing the magic: give it a moment */
	struct shmq_hdr *peek = NULL;
	for (int tries = 0;; tries++) {
		if (fstat(fd, &st) < 0) {
			err = -errno;
			goto fail_close;
		}
		if ((uint64_t)st.st_size >= SHMQ_HDR_SIZE) {
			peek = mmap(NULL, SHMQ_HDR_SIZE, PROT_READ, MAP_SHARED, fd, 0);
			if (peek == MAP_FAILED) {
				err = -errno;
				goto fail_close;
			}
			uint64_t magic = atomic_load_explicit(&peek->magic, memory_order_acquire);
			if (magic != 0)
				break;
			munmap(peek, SHMQ_HDR_SIZE);
			peek = NULL;
		}
		if (tries >= 50) {
			err = (uint64_t)st.st_size >= SHMQ_HDR_SIZE ? -EAGAIN : -EPROTO;
			goto fail_close;
		}
		usleep(10000);
	}
	err = shmq_validate_header(peek, (uint64_t)st.st_size);
	munmap(peek, SHMQ_HDR_SIZE);
	if (err)
		goto fail_close;

	uint64_t size = (uint64_t)st.st_size;
	void *base = mmap(NULL, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		err = -errno;
		goto fail_close;
	}
	/* validate again, on a private copy of the mapping we keep: the object may have changed
	 * between the two maps, and may change again after this check */
	memcpy(&m->hdr, base, sizeof(m->hdr));
	if ((err = shmq_validate_header(&m->hdr, size))) {
		munmap(base, size);
		goto fail_close;
	}
	m->fd = fd;
	m->base = base;
	m->size = size;
	memcpy(m->name, n, sizeof(n));
	return 0;

fail_close:
	close(fd);
	return err;
}

int shmq_open(const char *name, shmq_t **out) { return shmq_open_opts(name, NULL, out); }

int shmq_open_opts(const char *name, const struct shmq_open_options *opts, shmq_t **out)
{
	struct shmq_open_options def;
	struct shmq_mapping m;
	int err;
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!opts) {
		shmq_open_options_init(&def);
		opts = &def;
	}
	for (size_t i = 0; i < sizeof(opts->reserved) / sizeof(opts->reserved[0]); i++)
		if (opts->reserved[i])
			return -EINVAL;
	shmq_t *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->settings_mu, NULL); /* holds nothing to free on Linux */
	if ((err = shmq_map_segment(name, 1, opts, &m))) {
		free(q);
		return err;
	}
	if ((err = timens_check(&m.hdr))) {
		munmap(m.base, m.size);
		close(m.fd);
		free(q);
		return err;
	}
	memcpy(q->name, m.name, sizeof(q->name));
	handle_init(q, m.base, m.size, m.fd, &m.hdr);
	if ((err = attach(q))) {
		munmap(m.base, m.size);
		close(m.fd);
		free(q);
		return err;
	}
	close(m.fd); /* the mapping keeps the object; our lock has a description of its own */
	*out = q;
	return 0;
}

void shmq_close(shmq_t *q)
{
	if (!q)
		return;
	shmq_fd_close(q);    /* before the detach: its file is named by our record's index and epoch */
	shmq_part_detach(q); /* and closes our lock's description (a foreign handle has none) */
	munmap(q->base, q->size);
	free(q);
}

int shmq_unlink(const char *name)
{
	char n[SHMQ_NAME_MAX + 2];
	int err = shmq_normalize_name(name, n, sizeof(n));
	if (err)
		return err;
	return shm_unlink(n) < 0 ? -errno : 0;
}

uint32_t shmq_max_payload(const shmq_t *q) { return q ? q->max_payload : 0; }
