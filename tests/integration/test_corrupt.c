/* SPDX-License-Identifier: MIT */
/*
 * Random corruption: copies of real queues' segments (messages ready, leased by a process that is
 * gone, delayed, dead-lettered; 1 and 4 lanes; a dedup table) with 1-8 random bytes flipped in
 * their first pages (header, participant records, slots, dedup table), each put under a name of
 * its own and handed to the real tool (stat, peek, check, dlq list, recv, send, work, watchdog)
 * and to the library in a child process. Whatever the bytes say, every command must end by itself
 * within its timeout + 1 s (work and watchdog: within their grace after SIGTERM + 1 s), and none
 * may die of a signal. Exit codes are not judged: refusing a corrupt queue is fine. A command
 * that ends late is run once more on a fresh copy of its image (a loaded machine may not have
 * scheduled it); late again fails the test.
 *
 * SHMQ_CORRUPT_IMAGES (default 500) and SHMQ_CORRUPT_SEED (default: the time) repeat or extend a
 * run; a failing image is kept in $TMPDIR (or /tmp) for `shmq check` and a debugger.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common.h"
#include "layout.h"
#include "shmq.h"
#include "shmq_inspect.h"

static const char *tool;
static void init(void) { tool = tq_tool(); }

#define IMAGE_NAME "/shmq-test-corrupt-%d-%d" /* pid, image */
static int images_made;

/* tq_cleanup, and every image name (a failed assertion leaves some behind) */
static void fini(void)
{
	tq_cleanup();
	char name[64];
	for (int i = 0; i < images_made; i++) {
		snprintf(name, sizeof(name), IMAGE_NAME, (int)getpid(), i);
		shm_unlink(name);
	}
}

TestSuite(corrupt, .init = init, .fini = fini);

#define IMAGES_DEFAULT 500
#define JOBS 8 /* commands running at once */
/* A command may end this long after its own timeout: the bound, held by the plain build.
 * An ASan build runs the same images for memory errors, not for time: its processes start and run
 * several times slower (shadow memory), and on a loaded 2-core machine a run with the torture tests
 * beside it took up to 2.8 s for a watchdog that a plain build ends in ~50 ms. */
#ifdef __SANITIZE_ADDRESS__
#define SLACK_MS 4000
#else
#define SLACK_MS 1000
#endif
#define WAIT_MS 50	  /* the timeout of recv and send, and when work and watchdog get SIGTERM */
#define GRACE_MS 200	  /* work's --grace-ms */
#define LIB_LIMIT_MS 1000 /* the library child: a few calls of WAIT_MS at most */
#define BASES 3

/* ---- the images ------------------------------------------------------------------------------ */

struct base {
	unsigned char *bytes;
	size_t size;
	size_t slots_off, slots_len; /* the slot area and dedup table after it */
};

static unsigned char *read_shm(const char *name, size_t *size)
{
	int fd = shm_open(name, O_RDONLY, 0);
	cr_assert_geq(fd, 0, "shm_open(%s): %s", name, strerror(errno));
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	unsigned char *b = malloc((size_t)st.st_size);
	cr_assert_not_null(b);
	cr_assert_eq(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*size = (size_t)st.st_size;
	return b;
}

/* A queue in every state a segment has: ready, leased (by a handle whose process is gone once the
 * bytes are copied: nobody holds its lock in the copy), delayed, dead-lettered, keyed. */
static struct base make_base(int kind)
{
	struct shmq_config c =
		kind == 0 ? tq_config(64)
			  : tq_lanes_config(64, 4,
					    kind == 1 ? SHMQ_DISPATCH_ROUND_ROBIN : SHMQ_DISPATCH_KEY_HASH);
	c.slot_size = 128;
	c.max_deliveries = 3;
	c.dedup_entries = 64;
	c.dedup_window_ms = 60000;
	c.retry_base_ms = 1;
	c.retry_max_ms = 5;
	c.reclaim_interval_ms = 10;
	const char *name = tq_name(kind == 0 ? "one" : kind == 1 ? "rr" : "keyhash");
	shmq_t *q = tq_create(name, &c);
	for (int i = 0; i < 24; i++) {
		char key[16], data[32];
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(data, sizeof(data), "message %d", i);
		int r = i % 3 ? shmq_send_routed(q, key, strlen(key), data, strlen(data), 0)
			      : shmq_send_keyed(q, key, strlen(key), data, strlen(data), 0, NULL);
		cr_assert(r >= 0, "send %d: %s", i, shmq_strerror(r));
	}
	/* a key-hash queue hands one message per lane at a time: 4 */
	struct shmq_msg m[8];
	int n = 0;
	while (n < 8 && shmq_recv(q, &m[n], 0) == 0)
		n++;
	cr_assert_geq(n, 4, "received %d", n);
	shmq_ack(q, &m[0]);
	shmq_nack(q, &m[1], 60000); /* delayed */
	shmq_reject(q, &m[2]);	    /* dead letter */
	shmq_done_mark(q, "done-1", 6);
	/* m[3..] stay leased */
	struct base b;
	b.bytes = read_shm(name, &b.size);
	const struct shmq_hdr *h = (const void *)b.bytes;
	b.slots_off = h->slots_off;
	cr_assert_lt(b.slots_off, b.size);
	b.slots_len = b.size - b.slots_off;
	shmq_close(q);
	shm_unlink(name);
	return b;
}

static uint64_t rng_state;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 32);
}

/* An offset in the first pages: mostly the header's live part (counters, hints, futex words), also
 * its config, the first participant records, the slots and the dedup table. */
static size_t pick_offset(const struct base *b)
{
	uint32_t r = rnd() % 100;
	if (r < 40)
		return 192 + rnd() % (2752 - 192);
	if (r < 55)
		return rnd() % 192;
	if (r < 70)
		return 4096 + rnd() % (4 * 256);
	return b->slots_off + rnd() % b->slots_len;
}

/* ---- running commands under a deadline ------------------------------------------------------- */

enum {
	MAX_ARGS = 12
};

struct job {
	int image;
	const char *what;
	const char *argv[MAX_ARGS]; /* NULL argv[0]: the library child */
	int term_ms;		    /* SIGTERM this long after the start, 0: never */
	int limit_ms;		    /* must have ended this long after the start */
	pid_t pid;
	double start;
	int termed;
	int retried; /* a rerun of a job that ended late */
};

struct image {
	char name[64];
	unsigned char *bytes;
	size_t size;
	int left; /* jobs not yet ended */
	uint64_t seed;
};

struct tally {
	int images, commands, hangs, crashes, late, reruns;
};

/* The library, in this process's child: open, look, receive, send, reclaim, close. */
static void library_child(const struct image *im)
{
	alarm(30); /* a hang is caught by the parent long before; this only reaps a stray child */
	shmq_t *q;
	struct shmq_msg m[4];
	struct shmq_stats st;
	struct shmq_dead_letter dl[4];
	shmq_check_image(im->bytes, im->size, NULL, NULL);
	if (shmq_open(im->name, &q) == 0) {
		shmq_stats(q, &st);
		if (shmq_recv(q, &m[0], WAIT_MS / 2) == 0)
			shmq_ack(q, &m[0]);
		int n = shmq_recv_batch(q, m, 4, 0);
		for (int i = 0; i < n; i++)
			shmq_nack(q, &m[i], 0);
		shmq_send(q, "lib", 3, WAIT_MS / 2);
		shmq_send_keyed(q, "libkey", 6, "lib", 3, 0, NULL);
		shmq_reclaim(q, NULL);
		shmq_dlq_list(q, dl, 4);
		shmq_close(q);
	}
	_exit(0);
}

static void start(struct job *j, struct image *im)
{
	j->start = tq_now_ms();
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int dn = open("/dev/null", O_RDWR);
		dup2(dn, 0);
		dup2(dn, 1);
		dup2(dn, 2);
		/* a sanitizer build's finding ends the process with a signal, which counts as a crash
		 * (their default is an exit code; leaks on the way out are not this test's business) */
		setenv("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=0", 1);
		setenv("UBSAN_OPTIONS", "abort_on_error=1:halt_on_error=1:print_stacktrace=1", 1);
		if (!j->argv[0])
			library_child(im);
		setpgid(0, 0); /* work's commands go with it when a hang is killed */
		execv(tool, (char *const *)j->argv);
		_exit(127);
	}
	j->pid = pid;
}

static void keep_image(const struct image *im, const char *why, const char *what)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[512];
	snprintf(path, sizeof(path), "%s/shmq-corrupt-%llu.img", dir, (unsigned long long)im->seed);
	FILE *f = fopen(path, "wb");
	if (f) {
		fwrite(im->bytes, 1, im->size, f);
		fclose(f);
	}
	cr_expect(0, "%s %s on image seed %llu (kept in %s)", what, why, (unsigned long long)im->seed, path);
}

/* Waits for the end of one of the running jobs (or acts on a deadline); returns its index. A job
 * that ended late for the first time sets *rerun instead of failing: on a loaded machine (a
 * sanitizer build, the other tests running) a process may simply not have been scheduled. Late
 * twice is a failure. */
static int reap(struct job *run, int n, struct image *ims, struct tally *t, int *rerun)
{
	*rerun = 0;
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid < 0 && errno != EINTR && errno != ECHILD)
			cr_assert_fail("waitpid: %s", strerror(errno));
		for (int k = 0; pid > 0 && k < n; k++) {
			struct job *j = &run[k];
			if (j->pid != pid)
				continue;
			double took = tq_now_ms() - j->start;
			struct image *im = &ims[j->image];
			t->commands++;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
				cr_assert_fail("%s: could not run %s", j->what, tool);
			if (getenv("SHMQ_CORRUPT_VERBOSE"))
				fprintf(stderr, "image %d %s: status %#x, %.0f ms\n", j->image, j->what,
					status, took);
			if (WIFSIGNALED(status) && !(j->termed && WTERMSIG(status) == SIGTERM)) {
				t->crashes++;
				keep_image(im, strsignal(WTERMSIG(status)), j->what);
			} else if (took > j->limit_ms && !j->retried) {
				t->reruns++;
				*rerun = 1;
			} else if (took > j->limit_ms) {
				t->late++;
				char why[64];
				snprintf(why, sizeof(why), "took %.0f ms (limit %d)", took, j->limit_ms);
				keep_image(im, why, j->what);
			}
			return k;
		}
		double now = tq_now_ms();
		for (int k = 0; k < n; k++) {
			struct job *j = &run[k];
			if (j->term_ms && !j->termed && now - j->start >= j->term_ms) {
				kill(j->pid, SIGTERM);
				j->termed = 1;
			}
			if (now - j->start > j->limit_ms + 5000.0) {
				/* a hang: kill it (and what it started), count it, and let it be reaped */
				t->hangs++;
				keep_image(&ims[j->image], "hung", j->what);
				kill(-j->pid, SIGKILL);
				kill(j->pid, SIGKILL);
				waitpid(j->pid, &status, 0);
				t->commands++;
				return k;
			}
		}
		tq_sleep_ms(1);
	}
}

static int add_jobs(struct job *q, int image, const char *name)
{
	static const char interval[] = "10", wait[] = "50", grace[] = "200";
	_Static_assert(WAIT_MS == 50 && GRACE_MS == 200, "the strings above");
	int n = 0;
#define JOB(what_, term_, limit_, ...)                                                                       \
	q[n++] = (struct job){                                                                               \
		.image = image, .what = what_, .argv = {__VA_ARGS__}, .term_ms = term_, .limit_ms = limit_}
	JOB("stat", 0, SLACK_MS, tool, "stat", name);
	JOB("stat --json", 0, SLACK_MS, tool, "stat", name, "--json");
	JOB("peek", 0, SLACK_MS, tool, "peek", name, "--inflight", "--count", "8");
	JOB("check", 0, SLACK_MS, tool, "check", name);
	JOB("dlq list", 0, SLACK_MS, tool, "dlq", name, "list");
	JOB("recv", 0, WAIT_MS + SLACK_MS, tool, "recv", name, "--count", "4", "--timeout-ms", wait);
	JOB("send", 0, WAIT_MS + SLACK_MS, tool, "send", name, "--timeout-ms", wait, "corrupt");
	JOB("work", WAIT_MS, WAIT_MS + GRACE_MS + SLACK_MS, tool, "work", name, "--grace-ms", grace, "--",
	    "true");
	JOB("watchdog", WAIT_MS, WAIT_MS + SLACK_MS, tool, "watchdog", name, "--interval-ms", interval);
	JOB("library", 0, LIB_LIMIT_MS + SLACK_MS, NULL);
#undef JOB
	return n;
}

#define JOBS_PER_IMAGE 10

Test(corrupt, commands_on_randomly_corrupted_queues_end_in_time_without_a_crash, .timeout = 600)
{
	const char *env = getenv("SHMQ_CORRUPT_IMAGES");
	int images = env ? atoi(env) : IMAGES_DEFAULT;
	env = getenv("SHMQ_CORRUPT_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	cr_log_info("corruption: seed %llu (SHMQ_CORRUPT_SEED repeats this run)", (unsigned long long)seed);
	signal(SIGPIPE, SIG_IGN);

	struct base bases[BASES];
	for (int k = 0; k < BASES; k++)
		bases[k] = make_base(k);

	struct image *ims = calloc((size_t)images, sizeof(*ims));
	/* room for a rerun of every job */
	struct job *queue = calloc((size_t)images * JOBS_PER_IMAGE * 2, sizeof(*queue));
	cr_assert(ims && queue);
	struct job run[JOBS];
	int running = 0, next = 0, queued = 0, made = 0;
	struct tally t = {0};
	double t0 = tq_now_ms();
	while (made < images || next < queued || running) {
		/* make the next image once the queue runs low: few names exist at a time */
		while (made < images && queued - next < JOBS) {
			struct image *im = &ims[made];
			im->seed = seed + (uint64_t)made;
			rng_state = im->seed * 0x9e3779b97f4a7c15ULL | 1;
			const struct base *b = &bases[rnd() % BASES];
			im->size = b->size;
			im->bytes = malloc(b->size);
			cr_assert_not_null(im->bytes);
			memcpy(im->bytes, b->bytes, b->size);
			for (uint32_t f = 0, flips = 1 + rnd() % 8; f < flips; f++)
				im->bytes[pick_offset(b)] ^= (unsigned char)(1 + rnd() % 255);
			snprintf(im->name, sizeof(im->name), IMAGE_NAME, (int)getpid(), made);
			images_made = made + 1;
			int fd = shm_open(im->name, O_RDWR | O_CREAT | O_EXCL, 0600);
			cr_assert_geq(fd, 0, "shm_open(%s): %s", im->name, strerror(errno));
			cr_assert_eq(pwrite(fd, im->bytes, im->size, 0), (ssize_t)im->size);
			close(fd);
			int n = add_jobs(queue + queued, made, im->name);
			im->left = n;
			queued += n;
			made++;
			t.images++;
		}
		while (running < JOBS && next < queued) {
			run[running] = queue[next++];
			start(&run[running], &ims[run[running].image]);
			running++;
		}
		if (!running)
			continue;
		int rerun, k = reap(run, running, ims, &t, &rerun);
		struct image *im = &ims[run[k].image];
		if (rerun) {
			/* again, on the image as it was made (the other commands changed it) */
			int fd = shm_open(im->name, O_RDWR, 0);
			cr_assert_geq(fd, 0, "shm_open(%s): %s", im->name, strerror(errno));
			cr_assert_eq(pwrite(fd, im->bytes, im->size, 0), (ssize_t)im->size);
			close(fd);
			queue[queued] = run[k];
			queue[queued].retried = 1;
			queue[queued++].termed = 0;
		} else if (--im->left == 0) {
			shm_unlink(im->name);
			free(im->bytes);
			im->bytes = NULL;
		}
		run[k] = run[--running];
	}
	printf("corruption: %d images, %d commands in %.1f s: %d hangs, %d crashes, %d late (%d late once, "
	       "on time when run again) (seed %llu)\n",
	       t.images, t.commands, (tq_now_ms() - t0) / 1000, t.hangs, t.crashes, t.late, t.reruns - t.late,
	       (unsigned long long)seed);
	fflush(stdout);
	cr_expect_eq(t.hangs + t.crashes + t.late, 0);
	for (int k = 0; k < BASES; k++)
		free(bases[k].bytes);
	free(ims);
	free(queue);
}

/* The example: a producer tail at 2^62 kept `shmq work`'s receive walking the gap, deaf to
 * SIGTERM. */
Test(corrupt, work_stops_on_sigterm_within_its_grace_on_a_queue_whose_tail_is_2_62)
{
	const char *name = tq_name(NULL);
	shmq_t *q = tq_create(name, NULL);
	shmq_close(q);
	int fd = shm_open(name, O_RDWR, 0);
	cr_assert_geq(fd, 0);
	uint64_t tail = 1ULL << 62;
	off_t at = offsetof(struct shmq_hdr, lane) + offsetof(struct shmq_lane, prod_tail);
	cr_assert_eq(pwrite(fd, &tail, sizeof(tail), at), (ssize_t)sizeof(tail));
	close(fd);
	struct job j = {.what = "work", .argv = {tool, "work", name, "--grace-ms", "200", "--", "true"}};
	struct image im = {.seed = 0};
	start(&j, &im);
	tq_sleep_ms(100);
	kill(j.pid, SIGTERM);
	int status = 0;
	pid_t w = 0;
	double t0 = tq_now_ms();
	while ((w = waitpid(j.pid, &status, WNOHANG)) == 0 && tq_now_ms() - t0 < 200 + SLACK_MS + 3000)
		tq_sleep_ms(5);
	double took = tq_now_ms() - t0;
	if (w == 0) {
		kill(-j.pid, SIGKILL);
		kill(j.pid, SIGKILL);
		waitpid(j.pid, &status, 0);
	}
	cr_expect_neq(w, 0, "work still ran %.0f ms after SIGTERM", took);
	cr_expect_leq(took, 200 + SLACK_MS, "work took %.0f ms to stop after SIGTERM", took);
}
