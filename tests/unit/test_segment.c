/* SPDX-License-Identifier: MIT */
/*
 * Segment validation: shmq_open must refuse anything in /dev/shm that is not an intact queue of
 * this layout version, with the documented error and without crashing. Foreign objects are made
 * with shm_open + ftruncate + write; valid queues are corrupted field by field through pwrite on
 * the object, at offsets taken from struct shmq_hdr.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common.h"
#include "layout.h"
#include "shmq.h"
#include "shmq_inspect.h"

TestSuite(segment, .fini = tq_cleanup);

static int shm_fd(const char *name, int flags)
{
	int fd = shm_open(name, flags, 0600);
	cr_assert_geq(fd, 0, "shm_open(%s): %s", name, strerror(errno));
	return fd;
}

static off_t shm_size(const char *name)
{
	int fd = shm_fd(name, O_RDONLY);
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	close(fd);
	return st.st_size;
}

/* Opens name and expects err; a handle that opened anyway is closed, not leaked. */
static void expect_open_fails(const char *name, int err, const char *what)
{
	shmq_t *q = (shmq_t *)1;
	int r = shmq_open(name, &q);
	cr_expect_eq(r, err, "%s: shmq_open gave %d (%s), want %d (%s)", what, r, shmq_strerror(r), err,
		     shmq_strerror(err));
	if (r == 0)
		shmq_close(q);
	else
		cr_expect_null(q, "%s: handle not cleared on failure", what);
}

static void expect_open_ok(const char *name, const char *what)
{
	shmq_t *q = NULL;
	int r = shmq_open(name, &q);
	cr_expect_eq(r, 0, "%s: shmq_open gave %d (%s)", what, r, shmq_strerror(r));
	shmq_close(q);
}

/* A small valid queue, closed again: the object stays in /dev/shm for the test to damage. */
static void make_queue(const char *name)
{
	struct shmq_config c = tq_config(8);
	c.slot_size = 128;
	shmq_close(tq_create(name, &c));
	expect_open_ok(name, "the fresh queue");
}

static void put(const char *name, size_t off, const void *v, size_t len)
{
	int fd = shm_fd(name, O_RDWR);
	cr_assert_eq(pwrite(fd, v, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void get(const char *name, size_t off, void *v, size_t len)
{
	int fd = shm_fd(name, O_RDONLY);
	cr_assert_eq(pread(fd, v, len, (off_t)off), (ssize_t)len);
	close(fd);
}

#define PUT_FIELD(name, field, val)                                                                          \
	do {                                                                                                 \
		__typeof__(((struct shmq_hdr *)0)->field) v_ = (val);                                        \
		put(name, offsetof(struct shmq_hdr, field), &v_, sizeof(v_));                                \
	} while (0)

#define GET_FIELD(name, field, out) get(name, offsetof(struct shmq_hdr, field), &(out), sizeof(out))

Test(segment, open_of_missing_name_is_enoent)
{
	const char *n = tq_name(NULL);
	expect_open_fails(n, -ENOENT, "missing");
	expect_open_fails(n + 1, -ENOENT, "missing, without slash");
}

Test(segment, a_directory_or_a_symlink_in_dev_shm_is_refused_saying_which)
{
	char dir[TQ_NAME_LEN + 16], link[TQ_NAME_LEN + 16];
	const char *names[2];
	tq_make_dir_and_link(dir, link, names);
	const char *qd = names[0], *ql = names[1];
	shmq_t *q = NULL;
	cr_expect_eq(shmq_open(qd, &q), -EISDIR);
	cr_expect_eq(shmq_open(ql, &q), -ELOOP);
	cr_expect_null(q);
	cr_expect_eq(shmq_check_name(qd, NULL, NULL), -EISDIR);
	cr_expect(strstr(shmq_strerror(-EISDIR), "directory"));
	cr_expect(strstr(shmq_strerror(-ELOOP), "symbolic link"));
	tq_remove_dir_and_link(dir, link);
}

Test(segment, open_refuses_bad_arguments)
{
	const char *n = tq_name(NULL);
	shmq_t *q = NULL;
	make_queue(n);
	cr_expect_eq(shmq_open(n, NULL), -EINVAL);
	cr_expect_eq(shmq_open(NULL, &q), -EINVAL);
	cr_expect_eq(shmq_open("", &q), -EINVAL);
	cr_expect_eq(shmq_open("a/b", &q), -EINVAL);
}

/* An empty object looks like a creator between O_EXCL and ftruncate: open waits a little, then
 * gives up with an error instead of mapping nothing or crashing. */
Test(segment, open_of_empty_object_fails_after_a_short_wait)
{
	const char *n = tq_name(NULL);
	close(shm_fd(n, O_RDWR | O_CREAT | O_EXCL));
	shmq_t *q = (shmq_t *)1;
	double t0 = tq_now_ms();
	int r = shmq_open(n, &q);
	double took = tq_now_ms() - t0;
	cr_expect(r == -EPROTO || r == -EAGAIN, "empty object: %d (%s)", r, shmq_strerror(r));
	cr_expect_null(q);
	cr_expect_lt(took, 5000, "open of an empty object took %.0f ms", took);
}

Test(segment, open_of_header_sized_zeros_is_eagain)
{
	/* magic still 0: looks like a creator that has not finished; not corrupt (yet) */
	const char *n = tq_name(NULL);
	int fd = shm_fd(n, O_RDWR | O_CREAT | O_EXCL);
	cr_assert_eq(ftruncate(fd, 65536), 0);
	close(fd);
	expect_open_fails(n, -EAGAIN, "64 KiB of zeros");
}

Test(segment, open_of_random_bytes_is_eproto)
{
	const char *n = tq_name(NULL);
	int fd = shm_fd(n, O_RDWR | O_CREAT | O_EXCL);
	cr_assert_eq(ftruncate(fd, 65536), 0);
	static unsigned char buf[65536];
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (unsigned char)(x >> 24);
	}
	buf[0] |= 1; /* a nonzero magic: "finished, but not ours" */
	cr_assert_eq(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	close(fd);
	expect_open_fails(n, -EPROTO, "64 KiB of random bytes");
}

Test(segment, open_of_short_object_with_magic_is_eproto)
{
	/* smaller than a header: nothing past the end may be read */
	const char *n = tq_name(NULL);
	int fd = shm_fd(n, O_RDWR | O_CREAT | O_EXCL);
	uint64_t magic = SHMQ_MAGIC;
	cr_assert_eq(pwrite(fd, &magic, sizeof(magic), 0), (ssize_t)sizeof(magic));
	close(fd);
	expect_open_fails(n, -EPROTO, "8-byte object holding the magic");
}

Test(segment, open_of_truncated_queue_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	off_t size = shm_size(n);
	int fd = shm_fd(n, O_RDWR);
	cr_assert_eq(ftruncate(fd, size - 4096), 0);
	expect_open_fails(n, -EPROTO, "truncated by a page");
	cr_assert_eq(ftruncate(fd, size - 1), 0);
	expect_open_fails(n, -EPROTO, "truncated by a byte");
	cr_assert_eq(ftruncate(fd, SHMQ_HDR_SIZE), 0);
	expect_open_fails(n, -EPROTO, "truncated to the header");
	close(fd);
}

Test(segment, open_of_queue_truncated_inside_its_header_fails)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	int fd = shm_fd(n, O_RDWR);
	cr_assert_eq(ftruncate(fd, 100), 0);
	close(fd);
	shmq_t *q = (shmq_t *)1;
	int r = shmq_open(n, &q);
	cr_expect(r == -EPROTO || r == -EAGAIN, "truncated to 100 bytes: %d (%s)", r, shmq_strerror(r));
	cr_expect_null(q);
}

Test(segment, open_of_grown_queue_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	off_t size = shm_size(n);
	int fd = shm_fd(n, O_RDWR);
	cr_assert_eq(ftruncate(fd, size + 4096), 0);
	close(fd);
	expect_open_fails(n, -EPROTO, "grown by a page");
}

Test(segment, open_with_a_bit_flipped_in_magic_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	uint64_t magic;
	GET_FIELD(n, magic, magic);
	cr_assert_eq(magic, SHMQ_MAGIC);
	for (int bit = 0; bit < 64; bit += 9) {
		PUT_FIELD(n, magic, SHMQ_MAGIC ^ (1ULL << bit));
		expect_open_fails(n, -EPROTO, "magic bit flipped");
	}
	PUT_FIELD(n, magic, SHMQ_MAGIC);
	expect_open_ok(n, "magic restored");
}

Test(segment, open_of_other_layout_version_is_eprotonosupport)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	uint32_t versions[] = {0, SHMQ_LAYOUT_VERSION + 1, 0xffffffffu};
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		PUT_FIELD(n, version, versions[i]);
		expect_open_fails(n, -EPROTONOSUPPORT, "other version");
	}
	PUT_FIELD(n, version, SHMQ_LAYOUT_VERSION);
	expect_open_ok(n, "version restored");
}

Test(segment, open_with_non_power_of_two_capacity_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	uint32_t bad[] = {0, 1, 7, 9, 12, 0x80000001u};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		PUT_FIELD(n, capacity, bad[i]);
		expect_open_fails(n, -EPROTO, "capacity not a power of two");
	}
	PUT_FIELD(n, capacity, 8);
	expect_open_ok(n, "capacity restored");
}

Test(segment, open_with_capacity_inconsistent_with_file_size_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	uint64_t total;
	GET_FIELD(n, total_size, total);
	cr_assert_eq((uint64_t)shm_size(n), total);

	/* capacity alone changed: disagrees with total_size and with the file */
	PUT_FIELD(n, capacity, 16);
	expect_open_fails(n, -EPROTO, "capacity 16 in a capacity-8 file");
	PUT_FIELD(n, capacity, SHMQ_CAPACITY_MAX);
	expect_open_fails(n, -EPROTO, "capacity max in a capacity-8 file");

	/* capacity and total_size changed together: consistent with each other, not with fstat */
	PUT_FIELD(n, capacity, 16);
	PUT_FIELD(n, total_size, total + 8 * 128);
	expect_open_fails(n, -EPROTO, "capacity and total_size both claim 16 slots");

	PUT_FIELD(n, capacity, 8);
	PUT_FIELD(n, total_size, total);
	expect_open_ok(n, "capacity and total_size restored");
}

Test(segment, open_with_moved_slots_off_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	uint64_t slots_off;
	GET_FIELD(n, slots_off, slots_off);
	uint64_t bad[] = {0,	     slots_off - 64, slots_off + 64, slots_off + 4096, (uint64_t)shm_size(n),
			  UINT64_MAX};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		PUT_FIELD(n, slots_off, bad[i]);
		expect_open_fails(n, -EPROTO, "slots_off moved");
	}
	PUT_FIELD(n, slots_off, slots_off);
	expect_open_ok(n, "slots_off restored");
}

Test(segment, open_with_moved_holder_records_offset_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	uint64_t holders_off, slots_off;
	GET_FIELD(n, holders_off, holders_off);
	GET_FIELD(n, slots_off, slots_off);
	cr_assert_eq(holders_off + 8 * 8, (uint64_t)shm_size(n), "8 records of 8 bytes end the segment");
	uint64_t bad[] = {0, slots_off, holders_off - 8, holders_off + 8, (uint64_t)shm_size(n), UINT64_MAX};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		PUT_FIELD(n, holders_off, bad[i]);
		expect_open_fails(n, -EPROTO, "holders_off moved");
	}
	PUT_FIELD(n, holders_off, holders_off);
	expect_open_ok(n, "holders_off restored");
}

Test(segment, open_with_other_corrupt_sizes_is_eproto)
{
	const char *n = tq_name(NULL);
	make_queue(n);
	uint64_t parts_off;
	GET_FIELD(n, parts_off, parts_off);

	PUT_FIELD(n, parts_off, parts_off + 256);
	expect_open_fails(n, -EPROTO, "parts_off moved");
	PUT_FIELD(n, parts_off, parts_off);

	PUT_FIELD(n, hdr_size, 8192);
	expect_open_fails(n, -EPROTO, "hdr_size changed");
	PUT_FIELD(n, hdr_size, SHMQ_HDR_SIZE);

	PUT_FIELD(n, max_participants, SHMQ_MAX_PARTICIPANTS * 2);
	expect_open_fails(n, -EPROTO, "max_participants changed");
	PUT_FIELD(n, max_participants, SHMQ_MAX_PARTICIPANTS);

	PUT_FIELD(n, slot_size, 100);
	expect_open_fails(n, -EPROTO, "slot_size not a multiple of 64");
	PUT_FIELD(n, slot_size, 64);
	expect_open_fails(n, -EPROTO, "slot_size below the minimum");
	PUT_FIELD(n, slot_size, 128);

	PUT_FIELD(n, max_deliveries, 0);
	expect_open_fails(n, -EPROTO, "max_deliveries 0");
	PUT_FIELD(n, max_deliveries, 16);

	PUT_FIELD(n, dlq_max, 0);
	expect_open_fails(n, -EPROTO, "dlq_max 0");
	PUT_FIELD(n, dlq_max, 9);
	expect_open_fails(n, -EPROTO, "dlq_max above capacity");
	PUT_FIELD(n, dlq_max, 2);

	expect_open_ok(n, "all fields restored");
}

/* The control for the tests above: an intact queue opens, and both handles share it. */
Test(segment, open_of_valid_queue_shares_it_with_its_creator)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	shmq_t *a = tq_create(n, &c), *b = NULL;
	cr_assert_eq(shmq_open(n, &b), 0);
	cr_assert_eq(shmq_send(b, "abc", 3, 0), 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(a, &m, 0), 0);
	cr_expect_eq(m.len, 3);
	cr_expect_eq(memcmp(m.data, "abc", 3), 0);
	cr_expect_eq(shmq_ack(a, &m), 0);
	struct shmq_stats st;
	cr_assert_eq(shmq_stats(a, &st), 0);
	cr_expect_eq(st.participants, 2);
	cr_expect_eq(st.segment_bytes, (uint64_t)shm_size(n));
	shmq_close(b);
	shmq_close(a);
}

/* A queue unlinked while open keeps working for those who have it; the name is free again. */
Test(segment, unlinked_queue_keeps_working_for_open_handles)
{
	const char *n = tq_name(NULL);
	shmq_t *a = tq_create(n, NULL), *b = NULL;
	cr_assert_eq(shmq_unlink(n), 0);
	cr_expect_eq(shmq_open(n, &b), -ENOENT);
	cr_expect_eq(shmq_send(a, "z", 1, 0), 0);
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(a, &m, 0), 0);
	cr_expect_eq(shmq_ack(a, &m), 0);
	b = tq_create(n, NULL);
	shmq_close(b);
	shmq_close(a);
}
