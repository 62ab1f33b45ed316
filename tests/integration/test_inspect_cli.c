/* SPDX-License-Identifier: MIT */
/*
 * `shmq peek`, `shmq check` and `shmq stat --watch` on queues in known states: what they show,
 * that they change nothing in the segment, that check finds hand-made corruption (and only
 * that), and that the watch view refreshes in place in a pseudo-terminal, quits on q and
 * restores the terminal.
 */
#include <pty.h>
#include <termios.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "run_tool.h"
#include "layout.h"
#include "shmq.h"

TestSuite(inspect_cli, .init = run_tool_init, .fini = tq_cleanup);

/* ---- helpers --------------------------------------------------------------------------------- */

static shmq_t *mkq(const char *name, uint32_t capacity)
{
	struct shmq_config c = tq_config(capacity);
	return tq_create(name, &c);
}

static void send_str(shmq_t *q, const char *s) { cr_assert(shmq_send(q, s, strlen(s), 0) == 0); }

/* The bytes of /dev/shm/NAME (malloc'd), for before/after comparisons. */
static unsigned char *segment_bytes(const char *name, size_t *len)
{
	int fd = shm_open(name, O_RDONLY, 0);
	cr_assert(fd >= 0, "shm_open %s: %s", name, strerror(errno));
	struct stat st;
	cr_assert(fstat(fd, &st) == 0);
	unsigned char *buf = malloc((size_t)st.st_size);
	cr_assert(buf && pread(fd, buf, (size_t)st.st_size, 0) == st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* A writable mapping of NAME, to corrupt it by hand. */
static unsigned char *map_rw(const char *name, size_t *len)
{
	int fd = shm_open(name, O_RDWR, 0);
	cr_assert(fd >= 0);
	struct stat st;
	cr_assert(fstat(fd, &st) == 0);
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(p != MAP_FAILED);
	close(fd);
	*len = (size_t)st.st_size;
	return p;
}

static struct shmq_slot *slot_in(unsigned char *base, uint32_t i)
{
	struct shmq_hdr *h = (struct shmq_hdr *)base;
	return (struct shmq_slot *)(base + h->slots_off + (uint64_t)i * h->slot_size);
}

static int count_of(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* ---- peek ------------------------------------------------------------------------------------ */

Test(inspect_cli, peek_lists_waiting_messages_oldest_first_and_consumes_nothing)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 16);
	send_str(q, "first");
	send_str(q, "second");
	send_str(q, "third");
	size_t n1, n2;
	unsigned char *before = segment_bytes(name, &n1);

	struct run r;
	expect_ok(RUN(&r, NULL, "peek", name), NULL);
	const char *a = strstr(r.out, "first"), *b = strstr(r.out, "second"), *c = strstr(r.out, "third");
	cr_expect(a && b && c && a < b && b < c, "not oldest first:\n%s", r.out);
	cr_expect(strstr(r.out, "3 of 3 messages waiting"), "%s", r.out);
	expect_ok(RUN(&r, NULL, "peek", name, "--count", "1"), NULL);
	cr_expect(strstr(r.out, "first") && !strstr(r.out, "second"), "--count 1 showed:\n%s", r.out);
	cr_expect(strstr(r.out, "1 of 3 messages waiting"), "%s", r.out);

	unsigned char *after = segment_bytes(name, &n2);
	cr_expect(n1 == n2 && !memcmp(before, after, n1), "peek changed the segment");
	struct shmq_msg m;
	cr_assert(shmq_recv(q, &m, 0) == 0);
	cr_expect(m.len == 5 && !memcmp(m.data, "first", 5) && m.deliveries == 1,
		  "the first message was consumed or redelivered by peek");
	free(before);
	free(after);
	shmq_close(q);
}

Test(inspect_cli, peek_inflight_shows_the_holder_pid_and_the_lease_time_left)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 16);
	send_str(q, "held");
	send_str(q, "waiting");
	struct shmq_msg m;
	cr_assert(shmq_recv(q, &m, 0) == 0);

	struct run r;
	expect_ok(RUN(&r, NULL, "peek", name), NULL);
	cr_expect(!strstr(r.out, "held") && strstr(r.out, "waiting"), "without --inflight:\n%s", r.out);
	expect_ok(RUN(&r, NULL, "peek", name, "--inflight"), NULL);
	char pid[32];
	snprintf(pid, sizeof(pid), " %d ", (int)getpid());
	const char *row = strstr(r.out, "leased");
	cr_expect(row && strstr(row, pid) && strstr(row, "held"), "no leased row with our pid:\n%s", r.out);
	/* a 30 s lease (tq_config's default), just taken: shown as 29.x or 30.0 s left */
	cr_expect(row && (strstr(row, " 29.") || strstr(row, " 30.0 s")), "lease left:\n%s", r.out);
	shmq_close(q);
}

Test(inspect_cli, peek_hex_dumps_binary_payloads_whole)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 16);
	unsigned char bin[20];
	for (unsigned i = 0; i < sizeof(bin); i++)
		bin[i] = (unsigned char)(i * 13);
	cr_assert(shmq_send(q, bin, sizeof(bin), 0) == 0);
	struct run r;
	expect_ok(RUN(&r, NULL, "peek", name, "--hex"), NULL);
	cr_expect(strstr(r.out, "00000000  00 0d 1a 27 34 41 4e 5b  68 75 82 8f 9c a9 b6 c3"), "%s", r.out);
	cr_expect(strstr(r.out, "00000010  d0 dd ea f7"), "second line of the dump:\n%s", r.out);
	expect_error(RUN(&r, NULL, "peek", name, "--hex", "--json"), 2, "--hex");
	expect_error(RUN(&r, NULL, "peek", name, "--count", "0"), 2, "--count");
	shmq_close(q);
}

Test(inspect_cli, peek_json_escapes_bytes_and_reports_delayed_messages)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 16);
	cr_assert(shmq_send(q, "a\"b\\c\n\x01", 7, 0) == 0);
	send_str(q, "later");
	struct shmq_msg m;
	cr_assert(shmq_recv(q, &m, 0) == 0);
	cr_assert(shmq_recv(q, &m, 0) == 0);
	cr_assert(shmq_nack(q, &m, 60000) == 0);
	struct run r;
	expect_ok(RUN(&r, NULL, "peek", name, "--json"), NULL);
	cr_expect(strstr(r.out, "\"waiting\": 1"), "%s", r.out);
	cr_expect(strstr(r.out, "\"state\": \"delayed\"") && strstr(r.out, "\"deliveries\": 1"), "%s", r.out);
	cr_expect(strstr(r.out, "\"due_in_ms\": 5") || strstr(r.out, "\"due_in_ms\": 6"), "%s", r.out);
	expect_ok(RUN(&r, NULL, "peek", name, "--json", "--inflight"), NULL);
	cr_expect(strstr(r.out, "\"payload\": \"a\\\"b\\\\c\\u000a\\u0001\""), "escaping:\n%s", r.out);
	shmq_close(q);
}

/* ---- check ----------------------------------------------------------------------------------- */

Test(inspect_cli, check_of_a_healthy_busy_looking_queue_says_sound_and_exits_0)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 16);
	for (int i = 0; i < 5; i++)
		send_str(q, "m");
	struct shmq_msg m;
	cr_assert(shmq_recv(q, &m, 0) == 0);
	cr_assert(shmq_recv(q, &m, 0) == 0);
	cr_assert(shmq_nack(q, &m, 60000) == 0);
	cr_assert(shmq_recv(q, &m, 0) == 0);
	cr_assert(shmq_reject(q, &m) == 0);
	size_t n1, n2;
	unsigned char *before = segment_bytes(name, &n1);
	struct run r;
	char want[256];
	snprintf(want, sizeof(want), "%s: sound\n", name + 1);
	expect_ok(RUN(&r, NULL, "check", name), want);
	unsigned char *after = segment_bytes(name, &n2);
	cr_expect(n1 == n2 && !memcmp(before, after, n1), "check changed the segment");
	free(before);
	free(after);
	shmq_close(q);
}

Test(inspect_cli, check_lists_each_hand_made_corruption_and_exits_3)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 8);
	send_str(q, "a");
	send_str(q, "b");
	shmq_close(q);
	size_t len;
	unsigned char *base = map_rw(name, &len);
	struct shmq_hdr *h = (struct shmq_hdr *)base;
	atomic_store(&slot_in(base, 0)->word, w_make(0, 7, 0, 0));		/* no such state */
	atomic_store(&slot_in(base, 1)->word, w_make(1, SLOT_LEASED, 2000, 1)); /* owner past records */
	atomic_store(&slot_in(base, 3)->word, w_make(2, SLOT_FREE, 0, 0));	/* ticket of slot 2 */
	slot_in(base, 1)->len = 100000;						/* above max payload */
	atomic_store(&h->lane[0].cons_head, 9);					/* past prod_tail (2) */
	munmap(base, len);

	struct run r;
	RUN(&r, NULL, "check", name);
	expect_exit(&r, 3);
	const char *want[] = {
		"error: slot 0: state 7 is not one shmq writes",
		"error: slot 1: owner 2000 is past the 1024 participant records",
		"error: slot 1: payload length 100000 is above the max payload",
		"error: slot 3: ticket 2 belongs to slot 2",
		"error: tickets: consumer head 9 is past the producer tail 2",
		": 5 errors",
	};
	for (size_t i = 0; i < N_ELEMS(want); i++)
		cr_expect(strstr(r.out, want[i]), "missing '%s' in:\n%s", want[i], r.out);
}

Test(inspect_cli, check_of_a_foreign_or_truncated_object_names_the_problem_and_exits_3)
{
	const char *name = tq_name(NULL);
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0);
	cr_assert(write(fd, "not a queue at all", 18) == 18);
	close(fd);
	struct run r;
	RUN(&r, NULL, "check", name);
	expect_exit(&r, 3);
	cr_expect(strstr(r.out, "smaller than the 4096-byte header"), "%s", r.out);

	const char *name2 = tq_name("trunc");
	shmq_t *q = mkq(name2, 8);
	shmq_close(q);
	fd = shm_open(name2, O_RDWR, 0);
	cr_assert(fd >= 0 && ftruncate(fd, 8192) == 0);
	close(fd);
	RUN(&r, NULL, "check", name2);
	expect_exit(&r, 3);
	cr_expect(strstr(r.out, "truncated or resized"), "%s", r.out);
	expect_error(RUN(&r, NULL, "check", tq_name("missing")), 1, "no such queue");
}

Test(inspect_cli, check_warns_about_a_dead_holders_lease_but_exits_0)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 8);
	send_str(q, "x");
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *c;
		struct shmq_msg m;
		if (shmq_open(name, &c) || shmq_recv(c, &m, 0))
			_exit(1);
		_exit(0); /* dies holding the lease */
	}
	int st;
	cr_assert(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	struct run r;
	expect_ok(RUN(&r, NULL, "check", name), NULL);
	cr_expect(strstr(r.out, "warning: slot 0: leased by participant") && strstr(r.out, "process is gone"),
		  "%s", r.out);
	cr_expect(strstr(r.out, "sound, 1 warning"), "%s", r.out);
	shmq_close(q);
}

/* ---- stat --watch ---------------------------------------------------------------------------- */

/* Reads from the pty master into buf until `until` returns true or limit_ms pass. */
static size_t read_pty(int fd, char *buf, size_t cap, size_t len, int (*until)(const char *), int limit_ms)
{
	double end = tq_now_ms() + limit_ms;
	while (!(until && until(buf)) && tq_now_ms() < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n <= 0)
			break; /* EIO: the child closed the pty */
		len += (size_t)n;
		buf[len] = '\0';
	}
	return len;
}

/* two whole frames: each ends by clearing the rest of the screen */
static int two_frames(const char *s) { return count_of(s, "\033[J") >= 2; }

Test(inspect_cli, watch_in_a_terminal_refreshes_in_place_shows_rates_and_quits_on_q, .timeout = 30)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 64);
	send_str(q, "one");
	int master;
	pid_t pid = forkpty(&master, NULL, NULL, NULL);
	cr_assert(pid >= 0, "forkpty: %s", strerror(errno));
	if (pid == 0) {
		execl(tool, tool, "stat", name, "--watch", "--interval-ms", "100", (char *)NULL);
		_exit(127);
	}
	static char out[1 << 16];
	size_t len = read_pty(master, out, sizeof(out), 0, two_frames, 10000);
	cr_assert(two_frames(out), "two refreshes expected, got:\n%s", out);
	cr_expect(!strncmp(out, "\033[?1049h\033[?25l", 14), "alternate screen and hidden cursor first");
	cr_expect(count_of(out, "\033[H") >= 2, "each frame starts at home (in place)");
	cr_expect(strstr(out, "depth     ready 1"), "depths:\n%s", out);
	cr_expect(strstr(out, "rate/s    sent 0"), "the second frame has rates:\n%s", out);
	cr_assert(write(master, "q", 1) == 1);
	len = read_pty(master, out, sizeof(out), len, NULL, 5000);
	int st;
	cr_assert(waitpid(pid, &st, 0) == pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d:\n%s", st, out);
	cr_expect(len >= 14 && !strcmp(out + len - 14, "\033[?25h\033[?1049l"),
		  "cursor shown and main screen restored last");
	close(master);
	shmq_close(q);
}

Test(inspect_cli, watch_restores_the_terminal_modes_after_ctrl_c, .timeout = 30)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 8);
	int master;
	pid_t pid = forkpty(&master, NULL, NULL, NULL);
	cr_assert(pid >= 0);
	if (pid == 0) {
		execl(tool, tool, "stat", name, "--watch", "--interval-ms", "100", (char *)NULL);
		_exit(127);
	}
	static char out[1 << 16];
	size_t len = read_pty(master, out, sizeof(out), 0, two_frames, 10000);
	cr_assert(two_frames(out), "%s", out);
	struct termios t;
	cr_assert(tcgetattr(master, &t) == 0);
	cr_expect(!(t.c_lflag & ICANON) && !(t.c_lflag & ECHO),
		  "watch runs with canonical mode and echo off");
	cr_assert(write(master, "\003", 1) == 1); /* Ctrl-C: the line discipline sends SIGINT */
	read_pty(master, out, sizeof(out), len, NULL, 5000);
	int st;
	cr_assert(waitpid(pid, &st, 0) == pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "Ctrl-C is a normal quit, status %d:\n%s", st, out);
	cr_assert(tcgetattr(master, &t) == 0);
	cr_expect((t.c_lflag & ICANON) && (t.c_lflag & ECHO), "terminal modes restored");
	close(master);
	shmq_close(q);
}

Test(inspect_cli, watch_without_a_terminal_prints_plain_frames_and_stops_after_refreshes)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 8);
	struct run r;
	expect_ok(RUN(&r, NULL, "stat", name, "--watch", "--interval-ms", "10", "--refreshes", "3"), NULL);
	cr_expect(count_of(r.out, "(q quits)") == 3, "%s", r.out);
	cr_expect(!strchr(r.out, '\033'), "no escape sequences when stdout is not a terminal");
	/* without a terminal, every line fits 80 columns */
	for (const char *l = r.out; *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		cr_expect(len <= 80, "a line of %zu columns: %.*s", len, (int)len, l);
		l += len + (nl != NULL);
	}
	expect_error(RUN(&r, NULL, "stat", name, "--refreshes", "3"), 2, "--watch");
	expect_error(RUN(&r, NULL, "stat", name, "--watch", "--interval-ms", "1"), 2, "--interval-ms");
	shmq_close(q);
}

/* `stat --watch` follows its NAME: unlinked, it says so over the last figures; created anew, it
 * maps the new segment. The first frame is read before the queue is replaced, then the rest. */
Test(inspect_cli, watch_notices_its_queue_unlinked_and_created_anew)
{
	const char *name = tq_name(NULL);
	shmq_t *q = mkq(name, 8);
	char cmd[1024], line[256];
	snprintf(cmd, sizeof(cmd), "'%s' stat '%s' --watch --interval-ms 200 --refreshes 6", tool, name);
	FILE *f = popen(cmd, "r");
	cr_assert(f, "popen");
	int first_done = 0, anew = 0;
	while (fgets(line, sizeof(line), f)) {
		if (!first_done && !strncmp(line, "idx", 3)) { /* the first frame's last header */
			first_done = 1;
			shmq_close(q);
			cr_assert_eq(shmq_unlink(name), 0);
			struct shmq_config c = tq_config(16);
			q = tq_create(name, &c);
		}
		anew += strstr(line, "created anew") != NULL;
		/* the new segment's 16 slots, not the old one's 8 */
		if (anew && strstr(line, "free 16 of 16"))
			anew = 2;
	}
	cr_expect_eq(pclose(f), 0);
	cr_expect(first_done, "no frame");
	cr_expect_eq(anew, 2, "the new segment was not followed");
	shmq_close(q);
}
