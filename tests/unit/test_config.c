/* SPDX-License-Identifier: MIT */
/*
 * Configuration and naming: the defaults, every bound shmq_config_validate enforces, which names
 * shmq_create accepts, and the permissions the segment gets.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "../common.h"
#include "internal.h"
#include "shmq.h"

TestSuite(config, .fini = tq_cleanup);

static struct shmq_config defaults(void)
{
	struct shmq_config c;
	memset(&c, 0xa5, sizeof(c)); /* init must set every field, not rely on a zeroed struct */
	shmq_config_init(&c);
	return c;
}

Test(config, init_sets_documented_defaults)
{
	struct shmq_config c = defaults();
	cr_expect_eq(c.capacity, 1024);
	cr_expect_eq(c.slot_size, 256);
	cr_expect_eq(c.lease_ms, 30000);
	cr_expect_eq(c.max_deliveries, 16);
	cr_expect_eq(c.retry_base_ms, 100);
	cr_expect_eq(c.retry_max_ms, 30000);
	cr_expect_eq(c.mode, 0600);
	cr_expect_eq(c.dlq_max, 0);
	cr_expect_eq(shmq_config_validate(&c), 0, "the defaults must validate");
}

Test(config, init_and_validate_tolerate_null)
{
	shmq_config_init(NULL);
	cr_expect_eq(shmq_config_validate(NULL), -EINVAL);
}

Test(config, rejects_bad_capacity)
{
	struct shmq_config c = defaults();
	uint32_t bad[] = {0, 1, 3, 1000, SHMQ_CAPACITY_MAX + 1, SHMQ_CAPACITY_MAX * 2u, UINT32_MAX};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c.capacity = bad[i];
		cr_expect_eq(shmq_config_validate(&c), -EINVAL, "capacity %u accepted", bad[i]);
	}
}

Test(config, accepts_capacity_bounds)
{
	struct shmq_config c = defaults();
	uint32_t good[] = {2, 4, 1024, SHMQ_CAPACITY_MAX};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		c.capacity = good[i];
		cr_expect_eq(shmq_config_validate(&c), 0, "capacity %u rejected", good[i]);
	}
}

Test(config, rejects_bad_slot_size)
{
	struct shmq_config c = defaults();
	uint32_t bad[] = {0, 64, 127, 129, 160, 200, 1000, SHMQ_SLOT_SIZE_MAX + 64};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c.slot_size = bad[i];
		cr_expect_eq(shmq_config_validate(&c), -EINVAL, "slot_size %u accepted", bad[i]);
	}
}

Test(config, accepts_slot_sizes_that_are_multiples_of_64_from_128)
{
	struct shmq_config c = defaults();
	c.capacity = 2;
	uint32_t good[] = {128, 192, 256, 4096, SHMQ_SLOT_SIZE_MAX};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		c.slot_size = good[i];
		cr_expect_eq(shmq_config_validate(&c), 0, "slot_size %u rejected", good[i]);
	}
}

Test(config, rejects_max_deliveries_out_of_range)
{
	struct shmq_config c = defaults();
	c.max_deliveries = 0;
	cr_expect_eq(shmq_config_validate(&c), -EINVAL);
	c.max_deliveries = SHMQ_MAX_DELIVERIES_MAX + 1;
	cr_expect_eq(shmq_config_validate(&c), -EINVAL);
	c.max_deliveries = 1;
	cr_expect_eq(shmq_config_validate(&c), 0);
	c.max_deliveries = SHMQ_MAX_DELIVERIES_MAX;
	cr_expect_eq(shmq_config_validate(&c), 0);
}

Test(config, rejects_retry_base_above_retry_max)
{
	struct shmq_config c = defaults();
	c.retry_base_ms = 200;
	c.retry_max_ms = 100;
	cr_expect_eq(shmq_config_validate(&c), -EINVAL);
	c.retry_base_ms = 100;
	cr_expect_eq(shmq_config_validate(&c), 0, "base == max is fine");
}

Test(config, rejects_zero_lease)
{
	struct shmq_config c = defaults();
	c.lease_ms = 0;
	cr_expect_eq(shmq_config_validate(&c), -EINVAL);
	c.lease_ms = 1;
	cr_expect_eq(shmq_config_validate(&c), 0);
}

Test(config, rejects_mode_beyond_permission_bits)
{
	struct shmq_config c = defaults();
	mode_t bad[] = {01000, 02600, 04600, 07777, 0100600};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c.mode = bad[i];
		cr_expect_eq(shmq_config_validate(&c), -EINVAL, "mode %o accepted", (unsigned)bad[i]);
	}
	c.mode = 0777;
	cr_expect_eq(shmq_config_validate(&c), 0);
	c.mode = 0;
	cr_expect_eq(shmq_config_validate(&c), 0);
}

Test(config, rejects_dlq_max_above_capacity)
{
	struct shmq_config c = defaults();
	c.capacity = 8;
	c.dlq_max = 9;
	cr_expect_eq(shmq_config_validate(&c), -EINVAL);
	c.dlq_max = 8;
	cr_expect_eq(shmq_config_validate(&c), 0);
}

Test(config, create_refuses_invalid_config)
{
	const char *n = tq_name(NULL);
	struct shmq_config c = defaults();
	c.capacity = 3;
	shmq_t *q = (shmq_t *)1;
	cr_expect_eq(shmq_create(n, &c, &q), -EINVAL);
	cr_expect_null(q, "the handle is cleared on failure");
	cr_expect_eq(shmq_open(n, &q), -ENOENT, "nothing was left behind");
}

Test(config, create_with_null_config_uses_defaults)
{
	const char *n = tq_name(NULL);
	shmq_t *q = NULL;
	cr_assert_eq(shmq_create(n, NULL, &q), 0);
	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q, &st), 0);
	cr_expect_eq(st.config.capacity, 1024);
	cr_expect_eq(st.config.slot_size, 256);
	cr_expect_eq(st.max_payload, 256 - SHMQ_SLOT_HEADER);
	cr_expect_eq(shmq_max_payload(q), 256 - SHMQ_SLOT_HEADER);
	shmq_close(q);
}

Test(config, create_refuses_bad_names)
{
	const char *bad[] = {"", "/", "a/b", "/a/b", "a/", "//a", ".", "/..", NULL};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		shmq_t *q = NULL;
		int r = shmq_create(bad[i], NULL, &q);
		cr_expect_eq(r, -EINVAL, "name \"%s\" gave %d", bad[i] ? bad[i] : "(null)", r);
		if (r == 0) { /* do not leave a stray queue behind */
			shmq_close(q);
			shmq_unlink(bad[i]);
		}
	}
}

/* SHMQ_NAME_MAX counts the leading '/', so "/" + 199 bytes is the longest name. */
Test(config, create_refuses_names_longer_than_name_max)
{
	char base[64], longest[SHMQ_NAME_MAX + 8], too_long[SHMQ_NAME_MAX + 8];
	snprintf(base, sizeof(base), "/shmq-test-config-long-%d-", (int)getpid());
	size_t bl = strlen(base);
	memcpy(longest, base, bl);
	memset(longest + bl, 'x', SHMQ_NAME_MAX - bl);
	longest[SHMQ_NAME_MAX] = '\0';
	memcpy(too_long, longest, SHMQ_NAME_MAX);
	too_long[SHMQ_NAME_MAX] = 'x';
	too_long[SHMQ_NAME_MAX + 1] = '\0';
	shm_unlink(longest);

	shmq_t *q = NULL;
	cr_expect_eq(shmq_create(too_long, NULL, &q), -ENAMETOOLONG);
	cr_expect_eq(shmq_create(too_long + 1, NULL, &q), -ENAMETOOLONG, "without the slash, too");
	cr_expect_eq(shmq_open(too_long, &q), -ENAMETOOLONG);
	cr_expect_eq(shmq_unlink(too_long), -ENAMETOOLONG);

	int r = shmq_create(longest, NULL, &q);
	cr_expect_eq(r, 0, "a name of exactly SHMQ_NAME_MAX bytes: %s", shmq_strerror(r));
	if (r == 0) {
		shmq_close(q);
		cr_expect_eq(shmq_unlink(longest + 1), 0);
	}
}

Test(config, create_refuses_existing_name)
{
	const char *n = tq_name(NULL);
	shmq_t *q = tq_create(n, NULL), *q2 = (shmq_t *)1;
	cr_expect_eq(shmq_create(n, NULL, &q2), -EEXIST);
	cr_expect_null(q2);
	/* the first queue is untouched by the failed create */
	cr_expect_eq(shmq_send(q, "x", 1, 0), 0);
	struct shmq_msg m;
	cr_expect_eq(shmq_recv(q, &m, 0), 0);
	shmq_close(q);
}

Test(config, name_with_and_without_leading_slash_is_one_queue)
{
	const char *n = tq_name(NULL); /* "/shmq-test-..." */
	shmq_t *a = tq_create(n + 1, NULL), *b = NULL, *c = NULL;
	cr_expect_eq(shmq_create(n, NULL, &c), -EEXIST);
	cr_assert_eq(shmq_open(n, &b), 0);
	cr_assert_eq(shmq_send(a, "ping", 4, 0), 0);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(b, &m, 1000), 0);
	cr_expect_eq(m.len, 4);
	cr_expect_eq(memcmp(m.data, "ping", 4), 0);
	cr_expect_eq(shmq_ack(b, &m), 0);
	shmq_close(a);
	shmq_close(b);
	cr_expect_eq(shmq_unlink(n + 1), 0);
	cr_expect_eq(shmq_unlink(n), -ENOENT, "already gone under its other spelling");
}

static mode_t shm_mode(const char *name)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
	cr_assert_eq(stat(path, &st), 0, "stat %s", path);
	return st.st_mode & 07777;
}

Test(config, segment_mode_defaults_to_0600_even_with_umask_0)
{
	const char *n = tq_name(NULL);
	umask(0); /* this test runs in its own process */
	shmq_t *q = tq_create(n, NULL);
	cr_expect_eq(shm_mode(n), 0600, "mode %o", (unsigned)shm_mode(n));
	shmq_close(q);
}

Test(config, segment_gets_configured_mode_regardless_of_umask)
{
	const char *n1 = tq_name("a"), *n2 = tq_name("b");
	struct shmq_config c = defaults();
	umask(077);
	c.mode = 0640;
	shmq_t *q1 = tq_create(n1, &c);
	cr_expect_eq(shm_mode(n1), 0640, "mode %o under umask 077", (unsigned)shm_mode(n1));
	umask(0);
	c.mode = 0400;
	shmq_t *q2 = tq_create(n2, &c);
	cr_expect_eq(shm_mode(n2), 0400, "mode %o under umask 0", (unsigned)shm_mode(n2));
	struct shmq_stats st;
	cr_assert_eq(shmq_stats(q2, &st), 0);
	cr_expect_eq(st.config.mode, 0400);
	shmq_close(q1);
	shmq_close(q2);
}

Test(config, unlink_of_missing_queue_is_enoent)
{
	const char *n = tq_name(NULL);
	cr_expect_eq(shmq_unlink(n), -ENOENT);
	cr_expect_eq(shmq_unlink(""), -EINVAL);
	cr_expect_eq(shmq_unlink(NULL), -EINVAL);
}

/* The coarse clock the library keeps lease times in (ms). */
static uint64_t coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

Test(config, a_header_scribbled_after_open_changes_no_lease_delivery_retry_or_reclaim_setting)
{
	const char *name = tq_name(NULL);
	struct shmq_config c = tq_config(8);
	c.lease_ms = 30000;
	c.max_deliveries = 3;
	c.retry_base_ms = 0;
	c.retry_max_ms = 0;
	c.reclaim_interval_ms = 0;
	shmq_t *q = tq_create(name, &c), *o;
	cr_assert_eq(shmq_open(name, &o), 0);
	/* after both handles validated it: a 1 ms lease, one delivery, an hour's backoff, a pass
	 * on every receive */
	q->hdr->lease_ms = 1;
	q->hdr->max_deliveries = 1;
	q->hdr->retry_base_ms = 3600000;
	q->hdr->retry_max_ms = 3600000;
	q->hdr->reclaim_interval_ms = 1;

	tq_send_u32(o, 1);
	struct shmq_msg m;
	cr_assert_eq(shmq_recv(o, &m, 0), 0);
	uint64_t lw = atomic_load(&slot_at(o, m.slot)->lease);
	cr_expect_geq(lw_ms(lw), coarse_ms() + 20000, "the lease is the configured 30 s");
	cr_assert_eq(shmq_extend(o, &m, 0), 0);
	lw = atomic_load(&slot_at(o, m.slot)->lease);
	cr_expect_geq(lw_ms(lw), coarse_ms() + 20000, "an extend by the default is 30 s too");
	cr_assert_eq(shmq_nack(o, &m, -1), 0);
	cr_expect_eq(shmq_dlq_list(o, NULL, 0), 0, "delivery 1 of 3 is not dead-lettered");
	int r = shmq_recv(o, &m, 1000);
	cr_expect_eq(r, 0, "the retry comes back after the configured 0 ms backoff: %s", shmq_strerror(r));
	if (r == 0)
		cr_expect_eq(m.deliveries, 2);
	for (int i = 0; i < 5; i++) {
		tq_sleep_ms(3);
		shmq_recv(o, &m, 0);
		shmq_recv(q, &m, 0);
	}
	struct shmq_stats st = tq_stats(o);
	cr_expect_eq(st.reclaim_passes, 0, "reclaim_interval_ms 0: receivers run no passes");
	cr_expect_eq(st.config.lease_ms, 30000, "stats report the validated config");
	cr_expect_eq(st.config.max_deliveries, 3);
	cr_expect_eq(st.config.retry_max_ms, 0);
	cr_expect_eq(st.config.reclaim_interval_ms, 0);
	for (unsigned d = 1; d < 8; d++)
		cr_expect_eq(shmq_backoff_ms(o, d), 0);
	shmq_close(o);
	shmq_close(q);
}
