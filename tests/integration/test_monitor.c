/* SPDX-License-Identifier: MIT */
/*
 * Monitoring that plugs in: `shmq stat --prometheus` over several queues (one valid exposition,
 * read by the strict reader of prom.h, and by promtool when it is installed), run as the built
 * tool on queues the tests create.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prom.h"
#include "run_tool.h"

TestSuite(monitor, .init = run_tool_init, .fini = tq_cleanup);

/* A queue of `capacity` slots holding `n` messages, made with the tool. */
static const char *queue_with(const char *tag, const char *capacity, int n)
{
	const char *q = tq_name(tag);
	struct run r;
	expect_ok(RUN(&r, NULL, "create", q, "--capacity", capacity), "");
	for (int i = 0; i < n; i++)
		expect_ok(RUN(&r, NULL, "send", q, "m"), "");
	return q;
}

/* name{queue="q"} with q's '"' and '\' escaped, as the exposition writes it */
static const char *queue_label(const char *q, char *buf, size_t sz)
{
	size_t o = (size_t)snprintf(buf, sz, "queue=\"");
	for (const char *s = q + 1; *s && o + 3 < sz; s++) {
		if (*s == '"' || *s == '\\')
			buf[o++] = '\\';
		buf[o++] = *s;
	}
	snprintf(buf + o, sz - o, "\"");
	return buf;
}

/* All of a file, NUL-terminated (to free): an exposition of every queue in /dev/shm has no fixed
 * bound, and the machine's other users' queues are in it too. */
static char *slurp(int fd)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap);
	ssize_t n;
	cr_assert(buf);
	cr_assert(lseek(fd, 0, SEEK_SET) == 0);
	while ((n = read(fd, buf + len, cap - len - 1)) > 0)
		if ((len += (size_t)n) + 1 == cap)
			cr_assert(buf = realloc(buf, cap *= 2));
	cr_assert(n == 0);
	buf[len] = '\0';
	return buf;
}

/* The stdout of the tool run with args (exit 0), however long (to free); SIGALRM kills a tool
 * still running after alarm_s seconds. */
static char *tool_output(const char *const args[], unsigned alarm_s)
{
	char path[] = "/tmp/shmq-out-XXXXXX";
	int fd = mkstemp(path), status;
	cr_assert(fd >= 0);
	unlink(path);
	const char *argv[16] = {tool};
	for (int i = 0; args[i] && i < 14; i++)
		argv[i + 1] = args[i];
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		move_fd(fd, 1);
		alarm(alarm_s); /* kept across execv */
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	cr_assert(waitpid(pid, &status, 0) == pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the tool failed (%s %d)",
		  WIFSIGNALED(status) ? "signal" : "exit",
		  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	char *out = slurp(fd);
	close(fd);
	return out;
}

/* the samples of this suite's queues only (the reader checks every line all the same) */
#define OUR_QUEUES "queue=\"shmq-test-monitor-"

/* promtool, Prometheus's own reader: its verdict on text. make test passes its path in
 * $SHMQ_PROMTOOL (on PATH, or unpacked from Debian's package); without one, the strict reader of
 * prom.h is the only check, and the test says so. */
static void promtool_accepts(const char *text)
{
	const char *promtool = getenv("SHMQ_PROMTOOL");
	if (!promtool || !*promtool) {
		/* a note, not cr_log_warn: Criterion makes the run's exit status 1 for a warning */
		fprintf(stderr,
			"note: no promtool ($SHMQ_PROMTOOL): the exposition is checked by prom.h only\n");
		return;
	}
	char path[] = "/tmp/shmq-prom-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "'%s' check metrics <%s 2>&1", promtool, path);
	FILE *p = popen(cmd, "r");
	cr_assert(p);
	char said[1024] = "";
	size_t n = fread(said, 1, sizeof(said) - 1, p);
	said[n] = '\0';
	int rc = pclose(p);
	unlink(path);
	cr_expect(rc == 0, "promtool check metrics rejects the exposition: %s", said);
}

Test(monitor, stat_prometheus_of_two_queues_is_one_exposition_with_each_family_once)
{
	const char *a = queue_with("a", "8", 3), *b = queue_with("b", "4", 1);
	static struct prom p;
	struct run r;
	char la[400], lb[400];
	expect_ok(RUN(&r, NULL, "stat", "--prometheus", a, b), NULL);
	parse_prom(r.out, NULL, &p); /* fails on a repeated or split family */
	promtool_accepts(r.out);
	queue_label(a, la, sizeof(la));
	queue_label(b, lb, sizeof(lb));
	cr_expect(prom_value(&p, "shmq_capacity_slots", la) == 8);
	cr_expect(prom_value(&p, "shmq_capacity_slots", lb) == 4);
	cr_expect(prom_value(&p, "shmq_sent_total", la) == 3);
	cr_expect(prom_value(&p, "shmq_sent_total", lb) == 1);
	cr_expect(prom_value(&p, "shmq_slots", "state=\"ready\"") == 3, "a's ready slots come first");
	/* every family carries both queues */
	for (int f = 0; f < p.nfamilies; f++)
		cr_expect(prom_count(&p, p.families[f], la) > 0 && prom_count(&p, p.families[f], lb) > 0,
			  "family %s lacks a queue", p.families[f]);
	cr_expect(p.nfamilies > 30, "only %d families", p.nfamilies);
}

Test(monitor, stat_prometheus_with_no_queue_named_or_all_covers_every_queue_and_skips_other_objects)
{
	const char *a = queue_with("a", "8", 2), *b = queue_with("b", "4", 0);
	const char *junk = tq_name("junk");
	int fd = shm_open(junk, O_CREAT | O_EXCL | O_RDWR, 0600);
	cr_assert(fd >= 0);
	cr_assert(write(fd, "not a queue, just bytes", 23) == 23);
	close(fd);
	static struct prom p;
	char la[400], lb[400], lj[400];
	const char *const *forms[] = {ARGV("stat", "--prometheus"), ARGV("stat", "--all", "--prometheus")};
	p.keep = OUR_QUEUES;
	for (size_t i = 0; i < N_ELEMS(forms); i++) {
		char *out = tool_output(forms[i], RUN_LIMIT_MS / 1000);
		/* other tests' queues come and go meanwhile: the exposition stays valid */
		parse_prom(out, NULL, &p);
		cr_expect(prom_value(&p, "shmq_sent_total", queue_label(a, la, sizeof(la))) == 2);
		cr_expect(prom_value(&p, "shmq_capacity_slots", queue_label(b, lb, sizeof(lb))) == 4);
		cr_expect(!strstr(out, queue_label(junk, lj, sizeof(lj))), "a foreign object was exported");
		free(out);
	}
}

static char zeros[16][64]; /* more objects than tq_name holds */

static void zeros_cleanup(void)
{
	for (int i = 0; i < 16; i++)
		if (zeros[i][0])
			shm_unlink(zeros[i]);
	tq_cleanup();
}

Test(monitor, stat_prometheus_of_every_queue_does_not_wait_on_objects_nobody_initialises,
     .fini = zeros_cleanup)
{
	/* zero-filled objects: a queue's creator that never wrote its magic, or a foreign object that
	 * starts with zeros. Named, each gets the library's grace (0.5 s); met in a listing, none,
	 * so 16 of them do not hold up every scrape for 8 s. */
	for (int i = 0; i < 16; i++) {
		snprintf(zeros[i], sizeof(zeros[i]), "/shmq-test-monitor-zeros-%d-%d", i, (int)getpid());
		int fd = shm_open(zeros[i], O_CREAT | O_EXCL | O_RDWR, 0600);
		cr_assert(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
		close(fd);
	}
	const char *q = queue_with(NULL, "4", 1);
	static struct prom p;
	char l[400];
	p.keep = OUR_QUEUES;
	char *out = tool_output(ARGV("stat", "--prometheus"), 5); /* at all before a 5 s alarm */
	parse_prom(out, NULL, &p);
	cr_expect(prom_value(&p, "shmq_sent_total", queue_label(q, l, sizeof(l))) == 1);
	cr_expect(!strstr(out, "zeros-"), "a zero-filled object was exported");
	free(out);
}

Test(monitor, stat_prometheus_escapes_quotes_and_backslashes_of_a_queue_name)
{
	const char *q = queue_with("say \"hi\" \\o", "4", 1);
	static struct prom p;
	struct run r;
	char l[400];
	cr_assert(strchr(q, '"'), "the test needs a name with quotes");
	expect_ok(RUN(&r, NULL, "stat", q, "--prometheus"), NULL);
	parse_prom(r.out, NULL, &p);
	promtool_accepts(r.out);
	cr_expect(prom_value(&p, "shmq_sent_total", queue_label(q, l, sizeof(l))) == 1, "%s", r.out);
}

/* A child that opens q, sends one message and waits, alive, until *go is written; then closes
 * its handle and exits. */
static pid_t participant(const char *q, int *go)
{
	int fds[2];
	cr_assert(pipe(fds) == 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		shmq_t *h;
		char c;
		close(fds[1]);
		if (shmq_open(q, &h) || shmq_send(h, "x", 1, 0))
			_exit(1);
		if (read(fds[0], &c, 1) < 0) /* EOF: the test closed its end */
			_exit(1);
		shmq_close(h);
		_exit(0);
	}
	close(fds[0]);
	*go = fds[1];
	return pid;
}

static void finish(pid_t pid, int go)
{
	int status;
	close(go);
	cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The label sets of name's samples, one per line, in order. */
static void label_sets(const struct prom *p, const char *name, char *buf, size_t sz)
{
	size_t o = 0;
	buf[0] = '\0';
	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->s[i].name, name))
			o += (size_t)snprintf(buf + o, o < sz ? sz - o : 0, "%s\n", p->s[i].labels);
}

Test(monitor, participant_series_are_labelled_by_record_not_pid_so_the_next_process_continues_them)
{
	const char *q = queue_with(NULL, "8", 0);
	static struct prom p;
	struct run r;
	char first[1024], second[1024];
	int go;

	/* one process attached: its record's series */
	pid_t a = participant(q, &go);
	for (int tries = 0; tries < 500; tries++) { /* until its send shows */
		expect_ok(RUN(&r, NULL, "stat", q, "--prometheus"), NULL);
		parse_prom(r.out, q + 1, &p);
		if (prom_count(&p, "shmq_participant_sent_total", NULL) == 1)
			break;
		usleep(10000);
	}
	label_sets(&p, "shmq_participant_sent_total", first, sizeof(first));
	cr_assert(first[0], "no participant series:\n%s", r.out);
	finish(a, go);

	/* it detaches; another process attaches in its place */
	pid_t b = participant(q, &go);
	for (int tries = 0; tries < 500; tries++) {
		expect_ok(RUN(&r, NULL, "stat", q, "--prometheus"), NULL);
		parse_prom(r.out, q + 1, &p);
		if (prom_value(&p, "shmq_sent_total", NULL) == 2 &&
		    prom_count(&p, "shmq_participant_sent_total", NULL) == 1)
			break;
		usleep(10000);
	}
	label_sets(&p, "shmq_participant_sent_total", second, sizeof(second));
	finish(b, go);
	cr_expect_str_eq(second, first, "the series changed with the process");
	cr_expect(!strstr(r.out, "pid="), "a sample is labelled with a pid:\n%s", r.out);
}

Test(monitor, stat_prometheus_naming_a_queue_that_does_not_exist_fails_with_one_line)
{
	const char *a = queue_with(NULL, "4", 0), *missing = tq_name("missing");
	struct run r;
	expect_error(RUN(&r, NULL, "stat", "--prometheus", a, missing), 1, "no such queue");
	cr_expect(!r.out[0], "printed a partial exposition:\n%s", r.out);
	expect_error(RUN(&r, NULL, "stat", a, missing), 2, "--prometheus only");
	expect_error(RUN(&r, NULL, "stat", "--all"), 2, "--all applies only to --prometheus");
}

/* ---- check --health -------------------------------------------------------------------------- */

/* Exit `code`, nothing on stderr, and one status line on stdout that starts with `start`. */
static void expect_health(const struct run *r, int code, const char *start)
{
	expect_exit(r, code);
	cr_expect_str_empty(r->err, "`%s` wrote to stderr", r->cmd);
	cr_expect(!strncmp(r->out, start, strlen(start)), "`%s`: status '%s', want it to start '%s'", r->cmd,
		  r->out, start);
	const char *nl = strchr(r->out, '\n');
	cr_expect(nl && !nl[1], "`%s`: not one line: %s", r->cmd, r->out);
}

static char status_start[512];
/* "SHMQ <STATE> - <bare name>: <figures>" */
static const char *status(const char *state, const char *q, const char *figures)
{
	snprintf(status_start, sizeof(status_start), "SHMQ %s - %s: %s", state, q + 1, figures);
	return status_start;
}

Test(monitor, check_health_exits_0_with_a_nagios_status_line_when_no_threshold_is_passed)
{
	const char *q = queue_with(NULL, "8", 3);
	struct run r;
	RUN(&r, NULL, "check", "--health", q, "--max-depth", "3", "--warn-depth", "3", "--max-dead", "0");
	expect_health(&r, 0, status("OK", q, "depth 3, oldest "));
	cr_expect(strstr(r.out, ", dead 0 | depth=3;3;3 age_ms="), "%s", r.out);
	cr_expect(strstr(r.out, " dead=0;;0\n"), "%s", r.out);
	RUN(&r, NULL, "check", q, "--health");
	expect_health(&r, 0, status("OK", q, "depth 3, oldest "));
}

Test(monitor, check_health_exits_1_warning_above_a_warn_threshold)
{
	const char *q = queue_with(NULL, "8", 3);
	struct run r;
	RUN(&r, NULL, "check", "--health", q, "--warn-depth", "2", "--max-depth", "5");
	expect_health(&r, 1, status("WARNING", q, "depth 3 (> 2), oldest "));
	cr_expect(strstr(r.out, "| depth=3;2;5 "), "%s", r.out);
}

Test(monitor, check_health_exits_2_critical_above_a_max_threshold_of_depth_age_or_dead_letters)
{
	const char *q = queue_with(NULL, "8", 2);
	struct run r;
	RUN(&r, NULL, "check", "--health", q, "--warn-depth", "1", "--max-depth", "1");
	expect_health(&r, 2, status("CRITICAL", q, "depth 2 (> 1), "));

	/* age: the oldest message waited past 0 ms (the segment's clock ticks every 1-4 ms) */
	usleep(50 * 1000);
	RUN(&r, NULL, "check", "--health", q, "--max-age-ms", "0");
	expect_health(&r, 2, status("CRITICAL", q, "depth 2, oldest "));
	cr_expect(strstr(r.out, " ms (> 0), dead 0"), "%s", r.out);

	/* dead letters: one message rejected */
	shmq_t *h;
	struct shmq_msg m;
	cr_assert(shmq_open(q, &h) == 0 && shmq_recv(h, &m, 0) == 0 && shmq_reject(h, &m) == 0);
	shmq_close(h);
	RUN(&r, NULL, "check", "--health", q, "--warn-dead", "0", "--max-dead", "0");
	expect_health(&r, 2, status("CRITICAL", q, "depth 1, oldest "));
	cr_expect(strstr(r.out, ", dead 1 (> 0) | "), "%s", r.out);
}

Test(monitor, check_health_exits_3_unknown_for_a_missing_foreign_or_corrupt_queue)
{
	const char *missing = tq_name("missing"), *foreign = tq_name("foreign");
	const char *q = queue_with("truncated", "8", 1);
	struct run r;
	RUN(&r, NULL, "check", "--health", missing);
	expect_health(&r, 3, status("UNKNOWN", missing, "no such queue"));

	int fd = shm_open(foreign, O_CREAT | O_EXCL | O_RDWR, 0600);
	cr_assert(fd >= 0 && write(fd, "hello", 5) == 5);
	close(fd);
	RUN(&r, NULL, "check", "--health", foreign);
	expect_health(&r, 3, status("UNKNOWN", foreign, "not a shmq segment"));

	/* a queue truncated under its header: corrupt */
	fd = shm_open(q, O_RDWR, 0);
	cr_assert(fd >= 0 && ftruncate(fd, 8192) == 0);
	close(fd);
	RUN(&r, NULL, "check", "--health", q, "--max-depth", "100");
	expect_health(&r, 3, status("UNKNOWN", q, ""));
	cr_expect(strstr(r.out, "truncated"), "%s", r.out);

	/* a directory or a link where the queue would be: UNKNOWN too, not WARNING (exit 1) */
	char dir[TQ_NAME_LEN + 16], link[TQ_NAME_LEN + 16];
	const char *names[2];
	tq_make_dir_and_link(dir, link, names);
	for (int i = 0; i < 2; i++) {
		RUN(&r, NULL, "check", "--health", names[i]);
		expect_exit(&r, 3);
	}
	tq_remove_dir_and_link(dir, link);
}

Test(monitor, check_health_usage_errors_exit_3_unknown_and_thresholds_need_health)
{
	const char *q = queue_with(NULL, "4", 0);
	struct run r;
	RUN(&r, NULL, "check", "--health", q, "--max-depth", "many");
	expect_exit(&r, 3);
	cr_expect(strstr(r.err, "--max-depth must be a whole number"), "%s", r.err);
	RUN(&r, NULL, "check", "--health", q, "--warn-depth", "9", "--max-depth", "5");
	expect_exit(&r, 3);
	cr_expect(strstr(r.err, "--warn-depth 9 is above --max-depth 5"), "%s", r.err);
	expect_error(RUN(&r, NULL, "check", q, "--max-depth", "5"), 2, "apply only to --health");
}

/* ---- exporter -------------------------------------------------------------------------------- */

/* A running `shmq exporter`, started on a port the kernel picks. */
struct exporter {
	pid_t pid;
	int out; /* its stdout */
	char url[128];
};

static void exporter_start(struct exporter *e, const char *const extra[])
{
	const char *args[16] = {tool, "exporter", "--listen", "127.0.0.1:0"};
	int n = 4, fds[2];
	for (int i = 0; extra && extra[i]; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	cr_assert(pipe(fds) == 0);
	e->pid = fork();
	cr_assert(e->pid >= 0);
	if (e->pid == 0) {
		move_fd(fds[1], 1);
		execv(tool, (char *const *)args);
		_exit(127);
	}
	close(fds[1]);
	e->out = fds[0];
	/* its first line: "shmq exporter: listening on http://127.0.0.1:PORT/metrics" */
	char line[256];
	size_t len = 0;
	struct pollfd p = {.fd = e->out, .events = POLLIN};
	while (len + 1 < sizeof(line) && (!len || line[len - 1] != '\n')) {
		cr_assert(poll(&p, 1, RUN_LIMIT_MS) == 1, "the exporter says nothing");
		ssize_t k = read(e->out, line + len, 1);
		cr_assert(k == 1, "the exporter exited before listening");
		len++;
	}
	line[len - 1] = '\0';
	const char *u = strstr(line, "http://");
	cr_assert(u && strstr(line, "listening on"), "first line: %s", line);
	snprintf(e->url, sizeof(e->url), "%.*s", 7 + (int)strcspn(u + 7, "/"), u);
}

/* SIGTERM, then its exit status: it must exit at all before a 5 s alarm. */
static int exporter_stop(struct exporter *e)
{
	int status = 0;
	cr_assert(kill(e->pid, SIGTERM) == 0);
	for (int i = 0; i < 500; i++) {
		pid_t w = waitpid(e->pid, &status, WNOHANG);
		if (w == e->pid) {
			close(e->out);
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		usleep(10000);
	}
	kill(e->pid, SIGKILL);
	waitpid(e->pid, &status, 0);
	close(e->out);
	cr_assert_fail("the exporter did not stop within 5 s of SIGTERM");
	return -1;
}

/* A scrape by curl: its HTTP status, content type and body. */
struct scrape {
	int status;
	char type[128];
	char *body; /* to free (scrape frees the previous one) */
};

static void scrape(const struct exporter *e, const char *path, struct scrape *s)
{
	char cmd[512], file[] = "/tmp/shmq-scrape-XXXXXX";
	int fd = mkstemp(file);
	cr_assert(fd >= 0);
	snprintf(cmd, sizeof(cmd), "curl -sS --max-time 5 -o %s -w '%%{http_code} %%{content_type}' '%s%s'",
		 file, e->url, path);
	FILE *p = popen(cmd, "r");
	cr_assert(p);
	char head[256] = "";
	size_t hl = fread(head, 1, sizeof(head) - 1, p);
	head[hl] = '\0';
	cr_assert(pclose(p) == 0, "`%s` failed: %s", cmd, head);
	s->type[0] = '\0';
	cr_assert(sscanf(head, "%d %127[^\n]", &s->status, s->type) >= 1, "curl said: %s", head);
	free(s->body);
	s->body = slurp(fd);
	close(fd);
	unlink(file);
}

Test(monitor, exporter_serves_every_queue_at_metrics_and_follows_queues_created_and_unlinked)
{
	const char *a = queue_with("a", "8", 2), *b = tq_name("b");
	static struct scrape s;
	static struct prom p;
	struct exporter e;
	struct run r;
	char la[400], lb[400];
	queue_label(a, la, sizeof(la));
	queue_label(b, lb, sizeof(lb));

	p.keep = OUR_QUEUES;
	exporter_start(&e, NULL);
	scrape(&e, "/metrics", &s);
	cr_expect_eq(s.status, 200);
	cr_expect(!strncmp(s.type, "text/plain; version=0.0.4", 25), "content type '%s'", s.type);
	parse_prom(s.body, NULL, &p);
	promtool_accepts(s.body);
	cr_expect(prom_value(&p, "shmq_sent_total", la) == 2);
	cr_expect(!strstr(s.body, lb), "b exists only later");

	/* created after the start: on the next scrape */
	expect_ok(RUN(&r, NULL, "create", b, "--capacity", "4"), "");
	scrape(&e, "/metrics", &s);
	parse_prom(s.body, NULL, &p);
	cr_expect(prom_value(&p, "shmq_capacity_slots", lb) == 4);

	/* unlinked: gone from the next scrape */
	expect_ok(RUN(&r, NULL, "unlink", a), "");
	scrape(&e, "/metrics", &s);
	parse_prom(s.body, NULL, &p);
	cr_expect(!strstr(s.body, la), "an unlinked queue is still exported");
	cr_expect(prom_count(&p, "shmq_capacity_slots", lb) == 1);

	scrape(&e, "/", &s);
	cr_expect_eq(s.status, 404, "GET /");
	scrape(&e, "/metrics/x", &s);
	cr_expect_eq(s.status, 404, "GET /metrics/x");
	cr_expect_eq(exporter_stop(&e), 0, "SIGTERM: exit 0");
	free(s.body);
}

Test(monitor, exporter_with_queues_named_serves_only_those_that_exist)
{
	const char *a = queue_with("a", "8", 1), *b = queue_with("b", "4", 0), *c = tq_name("c");
	static struct scrape s;
	static struct prom p;
	struct exporter e;
	struct run r;
	char la[400], lb[400], lc[400];
	exporter_start(&e, ARGV(a, c));
	scrape(&e, "/metrics", &s);
	cr_expect_eq(s.status, 200);
	parse_prom(s.body, NULL, &p);
	cr_expect(prom_value(&p, "shmq_sent_total", queue_label(a, la, sizeof(la))) == 1);
	cr_expect(!strstr(s.body, queue_label(b, lb, sizeof(lb))), "b was not named");
	cr_expect(!strstr(s.body, queue_label(c, lc, sizeof(lc))), "c does not exist yet");
	expect_ok(RUN(&r, NULL, "create", c, "--capacity", "2"), "");
	scrape(&e, "/metrics", &s);
	parse_prom(s.body, NULL, &p);
	cr_expect(prom_value(&p, "shmq_capacity_slots", lc) == 2, "c, once created");
	/* SIGINT stops it as cleanly */
	cr_assert(kill(e.pid, SIGINT) == 0);
	int status;
	cr_assert(waitpid(e.pid, &status, 0) == e.pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGINT: exit 0");
	close(e.out);
	free(s.body);
}

Test(monitor, exporter_refuses_a_bad_listen_address_and_a_port_in_use_with_one_line)
{
	struct run r;
	expect_error(RUN(&r, NULL, "exporter", "--listen", "9464"), 2, "want HOST:PORT");
	expect_error(RUN(&r, NULL, "exporter", "--listen", "127.0.0.1:99999"), 2, "want HOST:PORT");
	expect_error(RUN(&r, NULL, "exporter", "--listen", "no.such.host.invalid:9464"), 2, "--listen");

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 1) == 0);
	cr_assert(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
	char listen_on[64];
	snprintf(listen_on, sizeof(listen_on), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
	expect_error(RUN(&r, NULL, "exporter", "--listen", listen_on), 1, "the port is in use");
	close(fd);
}
