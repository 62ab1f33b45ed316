/* SPDX-License-Identifier: MIT */
/*
 * Read-only views and the checker (shmq_inspect.h): what a snapshot and a slot read report on a
 * queue in a known state, that a view writes nothing and maps read-only, and that shmq_check_*
 * names each kind of corruption. Images are copies of a real segment (/dev/shm/NAME read into a
 * buffer), corrupted field by field at offsets taken from the layout.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "layout.h"
#include "shmq.h"
#include "shmq_inspect.h"

TestSuite(inspect, .fini = tq_cleanup);

/* ---- helpers ------------------------------------------------------------------------------- */

/* The segment NAME, byte for byte. */
static unsigned char *image_of(const char *name, size_t *len)
{
	int fd = shm_open(name, O_RDONLY, 0);
	cr_assert_geq(fd, 0, "shm_open(%s): %s", name, strerror(errno));
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	unsigned char *img = malloc((size_t)st.st_size + 1);
	cr_assert_not_null(img);
	cr_assert_eq(pread(fd, img, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return img;
}

static struct shmq_hdr *hdr_of(unsigned char *img) { return (struct shmq_hdr *)img; }

/* img + off, for a record of size bytes that must lie within the image's len bytes: the offsets
 * come from the image's header, which a test may have corrupted. */
static void *within(unsigned char *img, size_t len, uint64_t off, uint64_t size)
{
	cr_assert(off <= len && size <= len - off, "record at %llu (+%llu) is past the %zu-byte image",
		  (unsigned long long)off, (unsigned long long)size, len);
	return img + off;
}

static struct shmq_slot *slot_of(unsigned char *img, size_t len, uint32_t i)
{
	struct shmq_hdr *h = hdr_of(img);
	return within(img, len, h->slots_off + (uint64_t)i * h->slot_size, h->slot_size);
}

static struct shmq_participant *part_of(unsigned char *img, size_t len, uint32_t i)
{
	return within(img, len, hdr_of(img)->parts_off + (uint64_t)i * SHMQ_PART_SIZE, SHMQ_PART_SIZE);
}

#define MAX_FINDINGS 64
struct findings {
	int n, errors, warnings;
	int sev[MAX_FINDINGS];
	char what[MAX_FINDINGS][320];
};

static void collect(void *ctx, int severity, const char *what)
{
	struct findings *f = ctx;
	if (severity == SHMQ_CHECK_ERROR)
		f->errors++;
	else
		f->warnings++;
	if (f->n < MAX_FINDINGS) {
		f->sev[f->n] = severity;
		snprintf(f->what[f->n], sizeof(f->what[0]), "%s", what);
		f->n++;
	}
}

static int has(const struct findings *f, int severity, const char *text)
{
	for (int i = 0; i < f->n; i++)
		if (f->sev[i] == severity && strstr(f->what[i], text))
			return 1;
	return 0;
}

static void dump(const struct findings *f)
{
	for (int i = 0; i < f->n; i++)
		cr_log_info("%s: %s", f->sev[i] == SHMQ_CHECK_ERROR ? "error" : "warning", f->what[i]);
}

/* Checks img[0..len) and returns the findings; the return value must count the errors. */
static struct findings check(const unsigned char *img, size_t len)
{
	struct findings f = {0};
	int r = shmq_check_image(img, len, collect, &f);
	cr_expect_eq(r, f.errors, "shmq_check_image returned %d for %d errors", r, f.errors);
	return f;
}

/* The check of a corrupted image must report text as an error. */
static void expect_error(const unsigned char *img, size_t len, const char *text)
{
	struct findings f = check(img, len);
	cr_expect(has(&f, SHMQ_CHECK_ERROR, text), "no error '%s' among %d findings", text, f.n);
	if (!has(&f, SHMQ_CHECK_ERROR, text))
		dump(&f);
}

/* ... and a repairable oddity as a warning, with no error at all. */
static void expect_warning_only(const unsigned char *img, size_t len, const char *text)
{
	struct findings f = check(img, len);
	cr_expect(has(&f, SHMQ_CHECK_WARNING, text), "no warning '%s' among %d findings", text, f.n);
	cr_expect_eq(f.errors, 0, "%d errors", f.errors);
	if (f.errors || !has(&f, SHMQ_CHECK_WARNING, text))
		dump(&f);
}

static struct shmq_config quiet_config(uint32_t capacity)
{
	struct shmq_config c = tq_config(capacity);
	c.slot_size = 128;
	c.reclaim_interval_ms = 0; /* nothing moves unless the test moves it */
	return c;
}

/* A small queue in a plain state, copied: slot 0 leased by record 0 (delivery 1), slots 1 and 2
 * ready, 3..7 free; prod_tail 3, cons_head 1. */
static unsigned char *pristine(size_t *len)
{
	struct shmq_config c = quiet_config(8);
	const char *n = tq_name("img");
	shmq_t *q = tq_create(n, &c);
	for (uint32_t i = 0; i < 3; i++)
		tq_send_u32(q, i);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	unsigned char *img = image_of(n, len);
	shmq_close(q);
	return img;
}

/* The check of a pristine image whose slot i has the word w must report text as an error. */
static void expect_slot_error(uint32_t i, uint64_t w, const char *text)
{
	size_t len;
	unsigned char *img = pristine(&len);
	atomic_store(&slot_of(img, len, i)->word, w);
	expect_error(img, len, text);
	free(img);
}

/* Forks a process that opens NAME, receives one message and exits without settling it. */
static pid_t dead_consumer(const char *name)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		shmq_t *c = NULL;
		struct shmq_msg m;
		if (shmq_open(name, &c) != 0 || shmq_recv(c, &m, 0) != 0)
			_exit(1);
		_exit(0); /* no ack, no close: its lease stays with a dead record */
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the consumer child failed");
	return pid;
}

/* The known state of the snapshot and slot tests, on a 16-slot queue: messages "msg-0".."msg-5"
 * (ids 0..5) sent; 0 leased by us, 1 nacked for 60 s, 2 rejected, 3 leased by a consumer that
 * died, 4 and 5 ready. */
static shmq_t *known_state(const char *name, pid_t *child)
{
	struct shmq_config c = quiet_config(16);
	shmq_t *q = tq_create(name, &c);
	for (int i = 0; i < 6; i++) {
		char p[16];
		snprintf(p, sizeof(p), "msg-%d", i);
		cr_assert_eq(shmq_send(q, p, strlen(p) + 1, 0), 0);
	}
	struct shmq_msg m0, m1, m2;
	cr_assert_eq(shmq_recv(q, &m0, 0), 0);
	cr_assert_eq(shmq_recv(q, &m1, 0), 0);
	cr_assert_eq(shmq_nack(q, &m1, 60000), 0);
	cr_assert_eq(shmq_recv(q, &m2, 0), 0);
	cr_assert_eq(shmq_reject(q, &m2), 0);
	*child = dead_consumer(name);
	return q;
}

static shmq_view_t *view(const char *name)
{
	shmq_view_t *v = NULL;
	int r = shmq_view_open(name, &v);
	cr_assert_eq(r, 0, "shmq_view_open: %s", shmq_strerror(r));
	return v;
}

/* ---- snapshots ----------------------------------------------------------------------------- */

Test(inspect, snapshot_reports_depths_age_and_participants_of_a_known_state)
{
	const char *n = tq_name(NULL);
	pid_t child;
	shmq_t *q = known_state(n, &child);
	tq_sleep_ms(60); /* an oldest-ready age well above the coarse clock's tick */
	shmq_view_t *v = view(n);
	struct shmq_snapshot s;
	struct shmq_participant_info p[4];
	int r = shmq_view_snapshot(v, &s, p, 4);
	cr_assert_eq(r, 2, "records in use: %d", r);

	cr_expect_eq(s.stats.ready, 2);
	cr_expect_eq(s.stats.inflight, 2);
	cr_expect_eq(s.stats.delayed, 1);
	cr_expect_eq(s.stats.dead, 1);
	cr_expect_eq(s.stats.writing, 0);
	cr_expect_eq(s.stats.free_slots, 10);
	cr_expect_eq(s.oldest_ready_id, 4);
	cr_expect_geq(s.oldest_ready_age_ms, 40, "oldest ready age %llu ms",
		      (unsigned long long)s.oldest_ready_age_ms);
	cr_expect_lt(s.oldest_ready_age_ms, 10000);
	cr_expect_eq(s.prod_tail, 6);
	cr_expect_eq(s.cons_head, 4);
	cr_expect_eq(s.stats.sent, 6);
	cr_expect_eq(s.stats.received, 4);
	cr_expect_eq(s.stats.nacked, 1);
	cr_expect_eq(s.stats.rejected, 1);
	cr_expect_eq(s.stats.dead_lettered, 1);
	cr_expect_eq(s.stats.config.capacity, 16);
	cr_expect_eq(s.stats.max_payload, 128 - SHMQ_SLOT_HEADER);
	cr_expect_eq(s.creator_pid, getpid());

	cr_expect_eq(s.records, 2);
	cr_expect_eq(s.dead_participants, 1);
	cr_expect_eq(s.stats.participants, 1);
	cr_expect_eq(s.consistent, 1, "a quiet queue gave an inconsistent pass");
	cr_expect_eq(s.tries, 1);

	const struct shmq_participant_info *me = p[0].pid == getpid() ? &p[0] : &p[1];
	const struct shmq_participant_info *gone = me == &p[0] ? &p[1] : &p[0];
	cr_assert_eq(me->pid, getpid());
	cr_expect_eq(me->alive, 1);
	cr_expect_eq(me->leases, 1);
	cr_expect_eq(me->sent, 6);
	cr_expect_eq(me->received, 3);
	cr_expect_eq(me->nacked, 1);
	cr_expect_eq(me->rejected, 1);
	cr_expect_str_eq(me->role, "producer+consumer");
	cr_expect_eq(gone->pid, child);
	cr_expect_eq(gone->alive, 0, "the exited consumer reads as alive %d", gone->alive);
	cr_expect_eq(gone->leases, 1);
	cr_expect_eq(gone->received, 1);
	cr_expect_eq(gone->acked, 0);
	cr_expect_str_eq(gone->role, "consumer");
	cr_expect_lt(p[0].index, p[1].index, "records are listed in index order");

	/* fewer entries than records: the count is still all of them */
	cr_expect_eq(shmq_view_snapshot(v, &s, p, 1), 2);
	cr_expect_eq(shmq_view_snapshot(v, &s, NULL, 0), 2);
	cr_expect_eq(shmq_view_snapshot(v, NULL, p, 1), -EINVAL);
	cr_expect_eq(shmq_view_snapshot(v, &s, NULL, 1), -EINVAL);
	shmq_view_close(v);
	shmq_close(q);
}

Test(inspect, snapshot_of_an_image_reads_liveness_as_unknown)
{
	size_t len;
	unsigned char *img = pristine(&len);
	shmq_view_t *v = NULL;
	cr_assert_eq(shmq_view_image(img, len, &v), 0);
	struct shmq_snapshot s;
	struct shmq_participant_info p[2];
	cr_assert_eq(shmq_view_snapshot(v, &s, p, 2), 1);
	cr_expect_eq(p[0].alive, -1);
	cr_expect_eq(p[0].leases, 1);
	cr_expect_eq(s.stats.ready, 2);
	cr_expect_eq(s.stats.inflight, 1);
	cr_expect_eq(s.stats.participants, 1, "unknown counts as attached, not as dead");
	cr_expect_eq(s.dead_participants, 0);
	shmq_view_close(v);
	free(img);
}

/* ---- slot reads ---------------------------------------------------------------------------- */

Test(inspect, slot_read_copies_payload_and_reports_owner_and_due_time)
{
	const char *n = tq_name(NULL);
	pid_t child;
	shmq_t *q = known_state(n, &child);
	shmq_view_t *v = view(n);
	struct shmq_slot_info si;
	char buf[256];

	/* ids are tickets and capacity is 16: message i is in slot i */
	cr_assert_eq(shmq_view_slot(v, 0, &si, buf, sizeof(buf)), 0);
	cr_expect_eq(si.slot, 0);
	cr_expect_eq(si.kind, SHMQ_SLOT_LEASED);
	cr_expect_eq(si.id, 0);
	cr_expect_eq(si.deliveries, 1);
	cr_expect_eq(si.owner_pid, getpid());
	cr_expect_neq(si.owner, 0);
	cr_expect_eq(si.len, 6);
	cr_expect_eq(si.copied, 6);
	cr_expect_str_eq(buf, "msg-0");
	cr_expect(si.due_in_ms > 25000 && si.due_in_ms <= 30000, "lease due in %lld ms",
		  (long long)si.due_in_ms);
	cr_expect_eq(si.torn, 0);

	cr_assert_eq(shmq_view_slot(v, 1, &si, buf, sizeof(buf)), 0);
	cr_expect_eq(si.kind, SHMQ_SLOT_DELAYED);
	cr_expect_eq(si.deliveries, 1);
	cr_expect(si.due_in_ms > 55000 && si.due_in_ms <= 60000, "redelivery due in %lld ms",
		  (long long)si.due_in_ms);
	cr_expect_str_eq(buf, "msg-1");

	cr_assert_eq(shmq_view_slot(v, 2, &si, buf, sizeof(buf)), 0);
	cr_expect_eq(si.kind, SHMQ_SLOT_DEAD);
	cr_expect_eq(si.dead_reason, SHMQ_DEAD_REJECTED);
	cr_expect_eq(si.due_in_ms, 0);
	cr_expect_str_eq(shmq_slot_kind_str(si.kind), "dead");

	cr_assert_eq(shmq_view_slot(v, 3, &si, buf, sizeof(buf)), 0);
	cr_expect_eq(si.kind, SHMQ_SLOT_LEASED);
	cr_expect_eq(si.owner_pid, child, "owner pid %d, the dead consumer was %d", si.owner_pid, child);

	cr_assert_eq(shmq_view_slot(v, 4, &si, buf, sizeof(buf)), 0);
	cr_expect_eq(si.kind, SHMQ_SLOT_READY);
	cr_expect_eq(si.id, 4);
	cr_expect_eq(si.deliveries, 0);
	cr_expect_eq(si.owner, 0);
	cr_expect_eq(si.due_in_ms, 0);
	cr_expect_str_eq(buf, "msg-4");

	/* a short buffer gets a prefix; no buffer gets the metadata only */
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(shmq_view_slot(v, 5, &si, buf, 3), 0);
	cr_expect_eq(si.len, 6);
	cr_expect_eq(si.copied, 3);
	cr_expect_str_eq(buf, "msg");
	cr_assert_eq(shmq_view_slot(v, 5, &si, NULL, 0), 0);
	cr_expect_eq(si.copied, 0);

	cr_assert_eq(shmq_view_slot(v, 6, &si, buf, sizeof(buf)), 0);
	cr_expect_eq(si.kind, SHMQ_SLOT_FREE);
	cr_expect_eq(si.len, 0);

	cr_expect_eq(shmq_view_slot(v, 16, &si, buf, sizeof(buf)), -EINVAL);
	cr_expect_eq(shmq_view_slot(v, 0, NULL, buf, sizeof(buf)), -EINVAL);
	cr_expect_eq(shmq_view_slot(v, 0, &si, NULL, 8), -EINVAL);
	shmq_view_close(v);
	shmq_close(q);
}

Test(inspect, slot_read_clamps_a_corrupted_length_to_the_max_payload)
{
	size_t len;
	unsigned char *img = pristine(&len);
	slot_of(img, len, 1)->len = 0xffffffffu;
	shmq_view_t *v = NULL;
	cr_assert_eq(shmq_view_image(img, len, &v), 0);
	unsigned char buf[1024];
	struct shmq_slot_info si;
	cr_assert_eq(shmq_view_slot(v, 1, &si, buf, sizeof(buf)), 0);
	cr_expect_eq(si.kind, SHMQ_SLOT_READY);
	cr_expect_eq(si.len, 128 - SHMQ_SLOT_HEADER);
	cr_expect_eq(si.copied, 128 - SHMQ_SLOT_HEADER);
	cr_assert_eq(shmq_view_slot(v, 1, &si, buf, 10), 0);
	cr_expect_eq(si.copied, 10);
	shmq_view_close(v);
	free(img);
}

/* ---- read-only ----------------------------------------------------------------------------- */

Test(inspect, view_writes_nothing_and_claims_no_participant_record)
{
	const char *n = tq_name(NULL);
	pid_t child;
	shmq_t *q = known_state(n, &child);
	size_t len, len2;
	unsigned char *before = image_of(n, &len);

	shmq_view_t *v = view(n);
	struct shmq_snapshot s;
	struct shmq_participant_info p[4];
	cr_expect_eq(shmq_view_snapshot(v, &s, p, 4), 2, "the view claimed a record");
	unsigned char buf[256];
	for (uint32_t i = 0; i < s.stats.config.capacity; i++) {
		struct shmq_slot_info si;
		cr_expect_eq(shmq_view_slot(v, i, &si, buf, sizeof(buf)), 0);
	}
	struct findings f = {0};
	cr_expect_eq(shmq_check_name(n, collect, &f), 0);
	shmq_view_close(v);

	unsigned char *after = image_of(n, &len2);
	cr_assert_eq(len2, len);
	cr_expect_eq(memcmp(before, after, len), 0, "the segment changed under a view");
	free(before);
	free(after);
	shmq_close(q);
}

/* The first mapping of /dev/shm/NAME in /proc/self/maps: its address, length and permissions. */
static int find_mapping(const char *name, void **addr, size_t *len, char perms[5])
{
	FILE *m = fopen("/proc/self/maps", "r");
	cr_assert_not_null(m);
	char line[512], path[256];
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	int found = 0;
	while (!found && fgets(line, sizeof(line), m)) {
		unsigned long lo, hi;
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		size_t ll = strlen(line), pl = strlen(path);
		if (ll < pl || strcmp(line + ll - pl, path) != 0)
			continue;
		cr_assert_eq(sscanf(line, "%lx-%lx %4s", &lo, &hi, perms), 3);
		*addr = (void *)lo;
		*len = hi - lo;
		found = 1;
	}
	fclose(m);
	return found;
}

Test(inspect, view_opens_a_read_only_segment_through_a_read_only_mapping)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = quiet_config(8);
	c.mode = 0400;
	shmq_t *q = tq_create(n, &c);
	tq_send_u32(q, 7);
	shmq_close(q); /* no writable mapping of it left in this process */

	shmq_t *w = NULL;
	int r = shmq_open(n, &w);
	if (geteuid() != 0)
		cr_expect_eq(r, -EACCES, "shmq_open of a 0400 segment: %d", r);
	if (r == 0)
		shmq_close(w);

	shmq_view_t *v = view(n);
	void *addr;
	size_t len;
	char perms[5] = "";
	cr_assert(find_mapping(n, &addr, &len, perms), "no mapping of %s", n);
	cr_expect_str_eq(perms, "r--s");
	/* an O_RDONLY descriptor's shared mapping can never be made writable, even by root */
	cr_expect_eq(mprotect(addr, len, PROT_READ | PROT_WRITE), -1);
	cr_expect_eq(errno, EACCES);

	struct shmq_snapshot s;
	/* both handles were closed holding nothing: their records were freed at close */
	cr_expect_eq(shmq_view_snapshot(v, &s, NULL, 0), 0);
	cr_expect_eq(s.stats.sent, 1, "a freed record's counters stay in the totals");
	cr_expect_eq(s.stats.ready, 1);
	shmq_view_close(v);
}

/* ---- foreign images ------------------------------------------------------------------------ */

Test(inspect, random_and_empty_images_are_eproto_and_check_lists_errors)
{
	static unsigned char buf[65536];
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (unsigned char)(x >> 24);
	}
	buf[0] |= 1;
	shmq_view_t *v = (shmq_view_t *)1;
	cr_expect_eq(shmq_view_image(buf, sizeof(buf), &v), -EPROTO);
	cr_expect_null(v);
	expect_error(buf, sizeof(buf), "magic is");

	v = (shmq_view_t *)1;
	cr_expect_eq(shmq_view_image(buf, 0, &v), -EPROTO);
	cr_expect_null(v);
	expect_error(buf, 0, "smaller than");
	expect_error(NULL, 0, "smaller than");
	cr_expect_eq(shmq_view_image(NULL, 0, &v), -EINVAL);
	cr_expect_eq(shmq_check_image(NULL, 1, NULL, NULL), -EINVAL);
}

/* glibc's malloc aligns a large block to 16 bytes, not to struct shmq_hdr's 64: an image needs
 * only its records' 8-byte alignment, and anything less is refused, not read misaligned. */
Test(inspect, image_needs_only_8_byte_alignment)
{
	size_t len;
	unsigned char *img = pristine(&len);
	unsigned char *buf = aligned_alloc(64, len + 64);
	cr_assert_not_null(buf);
	memcpy(buf + 8, img, len);
	shmq_view_t *v = NULL;
	cr_assert_eq(shmq_view_image(buf + 8, len, &v), 0);
	struct shmq_snapshot s;
	cr_expect_eq(shmq_view_snapshot(v, &s, NULL, 0), 1);
	cr_expect_eq(s.prod_tail, 3);
	cr_expect_eq(s.cons_head, 1);
	shmq_view_close(v);
	struct findings f = check(buf + 8, len);
	cr_expect_eq(f.errors + f.warnings, 0);

	memmove(buf + 4, buf + 8, len);
	cr_expect_eq(shmq_view_image(buf + 4, len, &v), -EINVAL);
	cr_expect_null(v);
	cr_expect_eq(shmq_check_image(buf + 4, len, NULL, NULL), -EINVAL);
	free(buf);
	free(img);
}

/* ---- check: a sound segment ---------------------------------------------------------------- */

Test(inspect, check_of_a_pristine_image_is_clean)
{
	size_t len;
	unsigned char *img = pristine(&len);
	struct findings f = check(img, len);
	cr_expect_eq(f.errors, 0);
	cr_expect_eq(f.warnings, 0);
	dump(&f);
	cr_expect_eq(shmq_check_image(img, len, NULL, NULL), 0, "a NULL callback is allowed");
	free(img);
}

Test(inspect, check_of_a_quiet_live_queue_is_clean)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = quiet_config(8);
	shmq_t *q = tq_create(n, &c);
	tq_send_u32(q, 1);
	tq_send_u32(q, 2);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(q, &m, 0), 0);
	cr_assert_eq(shmq_ack(q, &m), 0);
	struct findings f = {0};
	cr_expect_eq(shmq_check_name(n, collect, &f), 0);
	cr_expect_eq(f.warnings, 0);
	dump(&f);
	cr_expect_eq(shmq_check_name(tq_name("missing"), collect, &f), -ENOENT);
	shmq_close(q);
}

/* ---- check: corruption, one kind per test ------------------------------------------------- */

Test(inspect, check_reports_bad_magic)
{
	size_t len;
	unsigned char *img = pristine(&len);
	atomic_store(&hdr_of(img)->magic, SHMQ_MAGIC ^ 0x100);
	expect_error(img, len, "magic is");
	free(img);
}

Test(inspect, check_reports_other_layout_version)
{
	size_t len;
	unsigned char *img = pristine(&len);
	hdr_of(img)->version = SHMQ_LAYOUT_VERSION + 1;
	char want[80];
	snprintf(want, sizeof(want), "layout version %u, this build reads version %u",
		 SHMQ_LAYOUT_VERSION + 1, SHMQ_LAYOUT_VERSION);
	expect_error(img, len, want);
	shmq_view_t *v = NULL;
	cr_expect_eq(shmq_view_image(img, len, &v), -EPROTONOSUPPORT);
	free(img);
}

Test(inspect, check_reports_truncated_image)
{
	size_t len;
	unsigned char *img = pristine(&len);
	expect_error(img, len - 4096, "truncated or resized");
	expect_error(img, len - 1, "truncated or resized");
	expect_error(img, 100, "smaller than the 4096-byte header");
	shmq_view_t *v = NULL;
	cr_expect_eq(shmq_view_image(img, len - 1, &v), -EPROTO);
	free(img);
}

Test(inspect, check_reports_bad_capacity)
{
	size_t len;
	unsigned char *img = pristine(&len);
	hdr_of(img)->capacity = 7;
	expect_error(img, len, "capacity 7 is not a power of two");
	hdr_of(img)->capacity = 16; /* a power of two, but not this segment's */
	expect_error(img, len, "truncated or resized");
	free(img);
}

Test(inspect, check_reports_bad_offsets)
{
	size_t len;
	unsigned char *img = pristine(&len);
	hdr_of(img)->slots_off += 64;
	expect_error(img, len, "slots offset is");
	hdr_of(img)->slots_off -= 64;
	hdr_of(img)->parts_off = 0;
	expect_error(img, len, "participants offset is 0");
	free(img);
}

Test(inspect, check_reports_a_moved_holder_records_offset)
{
	size_t len;
	unsigned char *img = pristine(&len);
	cr_assert_eq(shmq_check_image(img, len, NULL, NULL), 0, "the pristine image passes");
	uint64_t good = hdr_of(img)->holders_off;
	hdr_of(img)->holders_off = good + 8;
	expect_error(img, len, "holder records offset is");
	hdr_of(img)->holders_off = hdr_of(img)->slots_off;
	expect_error(img, len, "holder records offset is");
	hdr_of(img)->holders_off = good;
	cr_expect_eq(shmq_check_image(img, len, NULL, NULL), 0, "restored, it passes again");
	free(img);
}

Test(inspect, check_reports_slot_with_invalid_state)
{
	expect_slot_error(3, w_make(3, 5, 0, 0), "slot 3: state 5 is not one shmq writes");
}

Test(inspect, check_reports_ticket_in_the_wrong_slot)
{
	expect_slot_error(3, w_make(4, SLOT_FREE, 0, 0), "slot 3: ticket 4 belongs to slot 4");
}

Test(inspect, check_reports_ticket_never_issued)
{
	/* prod_tail is 3 */
	expect_slot_error(3, w_make(3, SLOT_READY, 0, 0), "slot 3: ready ticket 3, which was never issued");
}

Test(inspect, check_reports_owner_past_the_records)
{
	expect_slot_error(0, w_make(0, SLOT_LEASED, 2000, 1),
			  "slot 0: owner 2000 is past the 1024 participant records");
}

Test(inspect, check_reports_leased_with_delivery_0)
{
	expect_slot_error(0, w_make(0, SLOT_LEASED, 1, 0), "slot 0: leased at delivery 0");
}

Test(inspect, check_reports_ready_with_deliveries)
{
	expect_slot_error(1, w_make(1, SLOT_READY, 0, 3), "slot 1: ready with 3 deliveries");
}

Test(inspect, check_reports_payload_length_above_max)
{
	size_t len;
	unsigned char *img = pristine(&len);
	slot_of(img, len, 1)->len = 1000;
	expect_error(img, len, "slot 1: payload length 1000 is above the max payload 80");
	free(img);
}

Test(inspect, check_reports_participant_record_with_bad_state)
{
	size_t len;
	unsigned char *img = pristine(&len);
	atomic_store(&part_of(img, len, 5)->state, 7);
	expect_error(img, len, "participant 5: state 7 is not free (0) or alive (1)");
	free(img);
}

Test(inspect, check_reports_consumer_head_past_producer_tail)
{
	size_t len;
	unsigned char *img = pristine(&len);
	atomic_store(&hdr_of(img)->lane[0].cons_head, 10);
	expect_error(img, len, "consumer head 10 is past the producer tail 3");
	free(img);
}

Test(inspect, check_reports_settled_above_received)
{
	size_t len;
	unsigned char *img = pristine(&len);
	atomic_store(&part_of(img, len, 0)->counters[C_NACKED], 5); /* received 1 */
	expect_error(img, len,
		     "participant 0: settled 5 deliveries (acked + nacked + rejected) but received 1");
	free(img);
}

/* ---- check: what a crash leaves, repairable: warnings ------------------------------------- */

Test(inspect, check_warns_of_a_lease_held_by_a_freed_record)
{
	size_t len;
	unsigned char *img = pristine(&len);
	atomic_store(&part_of(img, len, 0)->state, PART_FREE);
	expect_warning_only(img, len, "slot 0: leased by participant 0, whose record is free");
	free(img);
}

Test(inspect, check_warns_of_a_lease_held_by_a_dead_process)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = quiet_config(8);
	shmq_t *q = tq_create(n, &c);
	tq_send_u32(q, 1);
	dead_consumer(n);
	struct findings f = {0};
	int r = shmq_check_name(n, collect, &f);
	cr_expect_eq(r, 0, "%d errors", r);
	cr_expect(has(&f, SHMQ_CHECK_WARNING, "slot 0: leased by participant 1, whose process is gone"));
	dump(&f);
	shmq_close(q);
}

/* A dedup claim names its claimer by record and epoch: a record claimed again since (a newer
 * epoch) is somebody else, and the claim is as good as dead, whatever that record's lock says. */
Test(inspect, check_warns_of_a_dedup_claim_whose_record_was_reused_and_not_of_a_live_one)
{
	struct shmq_config c = quiet_config(8);
	c.dedup_entries = 64;
	const char *n = tq_name(NULL);
	shmq_t *q = tq_create(n, &c);
	size_t len;
	unsigned char *img = image_of(n, &len);
	shmq_close(q);
	struct shmq_hdr *h = hdr_of(img);
	struct shmq_dedup_entry *e0 =
		within(img, len, h->dedup_off + dedup_entry_off(0), SHMQ_DEDUP_ENTRY_SIZE);
	struct shmq_dedup_entry *e1 =
		within(img, len, h->dedup_off + dedup_entry_off(1), SHMQ_DEDUP_ENTRY_SIZE);
	cr_assert(e0 && e1);
	uint64_t v = atomic_load(&part_of(img, len, 0)->state);
	cr_assert_eq(v & 0xff, PART_ALIVE, "the image keeps its creator's record alive");
	uint64_t epoch = (v >> 8) & 0xffffffff;
	atomic_store(&e0->word, de_make(epoch, 1, DK_PUBLISHED, DE_CLAIMED, 7));
	atomic_store(&e1->word, de_make(epoch + 1, 1, DK_PUBLISHED, DE_CLAIMED, 9));
	/* and their control bytes, as a claimer writes them (dedup.c) */
	struct shmq_dedup_group *g = within(img, len, h->dedup_off + dedup_group_off(0), sizeof(*g));
	cr_assert(g);
	atomic_store(&g->ctrl[0], dc_tag(7));
	atomic_store(&g->ctrl[1], dc_tag(9));
	struct findings f = check(img, len);
	cr_expect_eq(f.errors, 0);
	cr_expect(has(&f, SHMQ_CHECK_WARNING, "dedup entry 1: claimed by participant 0 (epoch"),
		  "a claim of an older epoch of a live record is not reported");
	cr_expect(!has(&f, SHMQ_CHECK_WARNING, "dedup entry 0:"),
		  "a claim of the record's own epoch is reported as gone");
	dump(&f);
	free(img);
}

Test(inspect, check_warns_of_counters_that_do_not_balance)
{
	size_t len;
	unsigned char *img = pristine(&len);
	atomic_fetch_add(&part_of(img, len, 0)->counters[C_SENT], 1);
	expect_warning_only(img, len, "counters: sent 4 - acked 0 - purged 0 - dropped 0 != 3 messages held");
	free(img);
}

Test(inspect, a_clean_close_frees_the_record_and_a_crash_leaves_it_until_a_reclaim_pass)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = tq_config(64);
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(n, &c), *p;
	cr_assert_eq(shmq_open(n, &p), 0);
	for (uint32_t i = 0; i < 3; i++)
		tq_send_u32(p, i);
	shmq_close(p); /* holds nothing: its record is freed now, not left looking dead */
	struct shmq_snapshot s;
	shmq_view_t *v = view(n);
	cr_expect_eq(shmq_view_snapshot(v, &s, NULL, 0), 1, "only the creator's record is in use");
	cr_expect_eq(s.dead_participants, 0);
	cr_expect_eq(s.stats.sent, 3, "the freed record's counters stay in the totals");
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		shmq_t *h;
		if (shmq_open(n, &h))
			_exit(1);
		tq_send_u32(h, 9);
		_exit(0); /* no close: as if it crashed */
	}
	waitpid(pid, NULL, 0);
	cr_expect_eq(shmq_view_snapshot(v, &s, NULL, 0), 2);
	cr_expect_eq(s.dead_participants, 1, "a process gone without closing shows as gone");
	struct shmq_reclaim_result r;
	cr_assert_geq(shmq_reclaim(q, &r), 0);
	cr_expect_eq(r.participants_freed, 1);
	cr_expect_eq(shmq_view_snapshot(v, &s, NULL, 0), 1);
	cr_expect_eq(s.stats.sent, 4, "totals keep every record's counters");
	shmq_view_close(v);
	shmq_close(q);
}
