/* SPDX-License-Identifier: MIT */
/*
 * crash.c: the crash bench (`make bench-crash`). Every transport of bench/peers/ that is a usable
 * queue carries the same numbered messages from one producer process while its consumer process
 * is SIGKILLed every 5-50 ms and replaced (bench/lib/crash_storm.c); then one consumer runs
 * unmolested. Per transport: kills, messages lost, messages delivered twice (and whether those are
 * the ones a killed consumer held), whether it wedged, how long it took to deliver the rest after
 * the last kill, and throughput during the storm. A terminal table and <out>/crash.json.
 *
 * A consumer "processes" each message for --work-us (50 us) between counting it and acking it, as
 * a real one would: that is where most kills land, with a message held. It also keeps the fastest
 * transports from draining 50,000 messages within the first consumer's 5-50 ms of life, which
 * would leave nothing to kill.
 *
 * Each transport runs in a child of its own (its own process group, $TMPDIR and log file), so a
 * transport that crashes, hangs or leaves processes behind costs only its own row: the child is
 * killed with its whole group after a time limit, and leftovers (scratch files, /dev/shm and
 * /dev/mqueue names holding its tag) are removed.
 *
 * shmq needs no watchdog here: its adapter creates the queue with the default config, so the
 * receivers themselves run a reclaim pass every 100 ms (reclaim_interval_ms), which requeues what a
 * dead consumer held.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/crash_storm.h"
#include "lib/daemon.h"
#include "lib/machine.h"
#include "lib/report.h"
#include "peers/peer.h"

#define CRASH_EXTRA_MS 60000   /* beyond storm + final limits: start, create, probes, stop */
#define CRASH_CLEANUP_MS 20000 /* a runner still cleaning up this long after its results: killed */

struct row {
	const char *name;
	const char *describe;
	const char *skipped; /* why, or NULL when it ran */
	char why[160];
	struct crash_result res;
	double wall_s;
	char log[512];
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: crash [--count N] [--only NAME,...] [--out DIR] [--quick] [--work-us US] "
		   "[--kill-ms A-B] [--seed S]\n"
		   "  --count N     messages per transport (default 50000; --quick: 5000)\n"
		   "  --only L      transports to run, by name (shmq,redis-streams) or slot (unix_stream)\n"
		   "  --out DIR     where crash.json and the per-transport logs go (default .)\n"
		   "  --work-us US  a consumer's processing time per message, between count and ack "
		   "(default 50)\n"
		   "  --seed S      seed of the kill intervals (default: from the clock)\n");
}

static int in_list(const char *list, const char *a, const char *b)
{
	if (!list)
		return 1;
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, ",");
		if ((strlen(a) == n && !strncmp(p, a, n)) || (strlen(b) == n && !strncmp(p, b, n)))
			return 1;
		p += n + (p[n] == ',');
	}
	return 0;
}

/* Unlinks the entries of dir whose name holds tag: what a killed transport left in shm or mqueue. */
static void rm_tagged(const char *dir, const char *tag)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	char path[600];
	for (struct dirent *e; (e = readdir(d));)
		if (strstr(e->d_name, tag)) {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	closedir(d);
}

/* Runs one transport's storm in its own process group and waits for it, within limits. */
static void run_one(const struct peer_ops *ops, unsigned slot, const struct crash_config *cfg,
		    const char *scratch, const char *out, struct crash_result *shared, struct row *row)
{
	char tag[64], tmp[512];
	snprintf(tag, sizeof(tag), "crash%ldt%02u", (long)getpid(), slot);
	snprintf(tmp, sizeof(tmp), "%s/%s", scratch, tag);
	snprintf(row->log, sizeof(row->log), "%s/crash-%s.log", out, ops->name);
	mkdir(tmp, 0700);
	memset(shared, 0, sizeof(*shared));
	printf("  %-16s running ...", ops->name);
	fflush(stdout);

	double t0 = now_s();
	pid_t pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		setenv("TMPDIR", tmp, 1);
		/* adapters and daemons talk on stdout/stderr: into the log, not the table */
		if (!freopen(row->log, "w", stderr) || dup2(fileno(stderr), STDOUT_FILENO) < 0)
			_exit(1);
		crash_storm_run(ops, cfg, tag, shared);
		_exit(0);
	}
	if (pid < 0) {
		snprintf(shared->note, sizeof(shared->note), "fork: %s", strerror(errno));
		shared->error = 1;
	} else {
		setpgid(pid, pid); /* also in the child: whichever runs first */
		double limit = (cfg->storm_limit_ms + cfg->final_limit_ms + CRASH_EXTRA_MS) / 1000.0,
		       done_at = 0;
		int status = 0;
		const char *killed = NULL;
		while (waitpid(pid, &status, WNOHANG) == 0) {
			double t = now_s();
			if (shared->finished && !done_at)
				done_at = t;
			if (done_at && t - done_at > CRASH_CLEANUP_MS / 1000.0)
				killed = "its cleanup (destroy/stop) hung: killed";
			else if (t - t0 > limit)
				killed = "hung past the time limit: killed";
			if (killed) {
				kill(-pid, SIGKILL);
				waitpid(pid, &status, 0);
				break;
			}
			struct timespec ts = {.tv_nsec = 20000000};
			nanosleep(&ts, NULL);
		}
		kill(-pid, SIGKILL); /* anything of its group still around */
		if (killed && shared->finished) {
			size_t n = strlen(shared->note);
			snprintf(shared->note + n, sizeof(shared->note) - n, "%s%s", n ? "; " : "", killed);
		} else if (killed || !shared->finished) {
			shared->error = 1;
			if (killed)
				snprintf(shared->note, sizeof(shared->note), "%s", killed);
			else if (WIFSIGNALED(status))
				snprintf(shared->note, sizeof(shared->note), "crashed: %s",
					 strsignal(WTERMSIG(status)));
			else
				snprintf(shared->note, sizeof(shared->note), "exited %d",
					 WEXITSTATUS(status));
		}
	}
	daemon_rmtree(tmp);
	rm_tagged("/dev/shm", tag);
	rm_tagged("/dev/mqueue", tag);
	row->res = *shared;
	row->wall_s = now_s() - t0;
	printf(" %.1f s\n", row->wall_s);
}

static const char *verdict(const struct row *w)
{
	if (w->skipped)
		return "skipped";
	if (w->res.error)
		return "error";
	return w->res.wedged ? "wedged" : "ok";
}

static void print_table(const struct row *rows, unsigned n, const struct crash_config *cfg)
{
	printf("\ncrash bench: %llu messages of %d B per transport, consumer SIGKILLed every %u-%u ms, "
	       "%u us of work per message\n\n",
	       (unsigned long long)cfg->count, CRASH_MSG_SIZE, cfg->kill_min_ms, cfg->kill_max_ms,
	       cfg->work_us);
	printf("%-16s %6s %8s %8s %9s %7s %10s %10s %11s  %s\n", "transport", "kills", "lost", "dup",
	       "dup held", "wedged", "recover ms", "settle ms", "storm msg/s", "notes");
	for (unsigned i = 0; i < n; i++) {
		const struct row *w = &rows[i];
		const struct crash_result *r = &w->res;
		if (w->skipped)
			continue;
		if (r->error && !r->kills) {
			printf("%-16s %6s %8s %8s %9s %7s %10s %10s %11s  error: %s\n", w->name, "-", "-",
			       "-", "-", "-", "-", "-", "-", r->note);
			continue;
		}
		char lost[24], rec[24], settle[24];
		/* a wedged transport did not lose what it still holds: say how much is stuck instead */
		snprintf(lost, sizeof(lost), r->wedged ? "(%llu)" : "%llu", (unsigned long long)r->lost);
		snprintf(rec, sizeof(rec), r->wedged || !r->kills ? "-" : "%.0f", r->recover_ms);
		snprintf(settle, sizeof(settle), r->wedged || !r->kills ? "-" : "%.0f", r->settle_ms);
		printf("%-16s %6u %8s %8llu %9llu %7s %10s %10s %11.0f  %s%s%s", w->name, r->kills, lost,
		       (unsigned long long)r->dup, (unsigned long long)r->dup_held,
		       r->wedged ? "WEDGED" : "no", rec, settle, r->storm_rate, r->error ? "error: " : "",
		       r->note, r->note[0] ? "; " : "");
		printf("storm %s in %.1f s", r->end, r->storm_s);
		if (r->dup > r->dup_held)
			printf("; %llu duplicates of messages no killed consumer held",
			       (unsigned long long)(r->dup - r->dup_held));
		if (r->corrupt)
			printf("; %llu corrupt", (unsigned long long)r->corrupt);
		if (r->ack_errors)
			printf("; %llu ack errors", (unsigned long long)r->ack_errors);
		if (r->consumer_exits)
			printf("; %u consumers exited by themselves", r->consumer_exits);
		printf("\n");
	}
	int any = 0;
	for (unsigned i = 0; i < n; i++)
		if (rows[i].skipped)
			printf("%s%s (%s)", any++ ? ", " : "\nskipped: ", rows[i].name, rows[i].skipped);
	printf("%s\nlost: never delivered (wedged rows: still undelivered, in parentheses). dup: delivered "
	       "more "
	       "than once;\ndup held: of those, messages a killed consumer had received and not finished "
	       "acking.\n"
	       "recover: last kill to the last first delivery (0: everything had arrived by then); settle: "
	       "last "
	       "kill to the\nlast delivery of any kind (redeliveries of what the last killed consumers "
	       "held). "
	       "storm msg/s: first\ndeliveries per second, storm start to its last first delivery.\n",
	       any ? "\n" : "");
}

static int write_json(const char *path, const struct row *rows, unsigned n, const struct crash_config *cfg,
		      double wall_s)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	struct machine m;
	machine_probe(&m);
	fprintf(f, "{\n  \"bench\": \"crash\",\n  \"machine\": {\"kernel\": ");
	json_str(f, m.kernel);
	fprintf(f, ", \"arch\": ");
	json_str(f, m.arch);
	fprintf(f, ", \"cores\": %ld, \"usable_cores\": %d, \"cpu\": ", m.online, m.usable);
	json_str(f, m.cpu_model);
	fprintf(f,
		"},\n  \"config\": {\"count\": %llu, \"msg_size\": %d, \"kill_ms\": [%u, %u], \"work_us\": "
		"%u, "
		"\"storm_limit_ms\": %u, \"quiet_ms\": %u, \"drain_ms\": %u, \"final_limit_ms\": %u, "
		"\"seed\": %llu, \"shmq_reclaim\": \"receivers' own passes every 100 ms (default "
		"reclaim_interval_ms), no watchdog\"},\n  \"wall_s\": %.1f,\n  \"transports\": [",
		(unsigned long long)cfg->count, CRASH_MSG_SIZE, cfg->kill_min_ms, cfg->kill_max_ms,
		cfg->work_us, cfg->storm_limit_ms, cfg->quiet_ms, cfg->drain_ms, cfg->final_limit_ms,
		(unsigned long long)cfg->seed, wall_s);
	for (unsigned i = 0; i < n; i++) {
		const struct row *w = &rows[i];
		const struct crash_result *r = &w->res;
		fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
		json_str(f, w->name);
		fprintf(f, ", \"describe\": ");
		json_str(f, w->describe);
		fprintf(f, ", \"result\": \"%s\"", verdict(w));
		if (w->skipped) {
			fprintf(f, ", \"reason\": ");
			json_str(f, w->skipped);
			fprintf(f, "}");
			continue;
		}
		fprintf(f, ", \"note\": ");
		json_str(f, r->note);
		fprintf(f, ", \"storm_end\": ");
		json_str(f, r->end);
		fprintf(f,
			", \"kills\": %u, \"kills_holding\": %u, \"consumer_exits\": %u, \"sent\": %llu, "
			"\"delivered\": %llu, \"lost\": %llu, \"duplicated\": %llu, "
			"\"duplicated_held_at_kill\": %llu, "
			"\"extra_deliveries\": %llu, \"corrupt\": %llu, \"ack_errors\": %llu, \"wedged\": "
			"%s, "
			"\"recover_ms\": %.1f, \"settle_ms\": %.1f, \"storm_s\": %.3f, \"storm_msgs_per_s\": "
			"%.0f, \"total_s\": "
			"%.1f, "
			"\"wall_s\": %.1f}",
			r->kills, r->kills_holding, r->consumer_exits, (unsigned long long)r->sent,
			(unsigned long long)r->delivered, (unsigned long long)r->lost,
			(unsigned long long)r->dup, (unsigned long long)r->dup_held,
			(unsigned long long)r->extra, (unsigned long long)r->corrupt,
			(unsigned long long)r->ack_errors, r->wedged ? "true" : "false", r->recover_ms,
			r->settle_ms, r->storm_s, r->storm_rate, r->total_s, w->wall_s);
	}
	fprintf(f, "\n  ]\n}\n");
	return fclose(f) ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct crash_config cfg = {
		.count = 50000,
		.kill_min_ms = 5,
		.kill_max_ms = 50,
		.work_us = 50,
		.storm_limit_ms = 60000,
		.quiet_ms = 5000,
		.drain_ms = 2000,
		.final_limit_ms = 60000,
		.seed = (uint64_t)time(NULL),
	};
	const char *only = NULL, *out = ".";
	int count_set = 0, quick = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--quick")) {
			quick = 1;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (v && !strcmp(a, "--count")) {
			char *end;
			cfg.count = strtoull(v, &end, 10);
			if (*end || !cfg.count || cfg.count > 10000000) {
				fprintf(stderr, "crash: --count wants 1..10000000, got '%s'\n", v);
				return 2;
			}
			count_set = 1, i++;
		} else if (v && !strcmp(a, "--only")) {
			only = v, i++;
		} else if (v && !strcmp(a, "--out")) {
			out = v, i++;
		} else if (v && !strcmp(a, "--work-us")) {
			char *end;
			unsigned long w = strtoul(v, &end, 10);
			if (*end || w > 1000000) {
				fprintf(stderr, "crash: --work-us wants 0..1000000, got '%s'\n", v);
				return 2;
			}
			cfg.work_us = (unsigned)w, i++;
		} else if (v && !strcmp(a, "--kill-ms")) {
			unsigned lo, hi;
			if (sscanf(v, "%u-%u", &lo, &hi) != 2 || !lo || lo > hi || hi > 60000) {
				fprintf(stderr, "crash: --kill-ms wants MIN-MAX in ms (5-50), got '%s'\n", v);
				return 2;
			}
			cfg.kill_min_ms = lo, cfg.kill_max_ms = hi, i++;
		} else if (v && !strcmp(a, "--seed")) {
			cfg.seed = strtoull(v, NULL, 0), i++;
		} else {
			fprintf(stderr, "crash: unknown or incomplete option '%s' (try --help)\n", a);
			return 2;
		}
	}
	if (quick && !count_set)
		cfg.count = 5000;
	if (mkdir(out, 0755) && errno != EEXIST) {
		fprintf(stderr, "crash: mkdir %s: %s\n", out, strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN); /* a pipe peer whose reader died returns EPIPE instead */

	char scratch[] = "/tmp/shmq-crash-XXXXXX";
	struct row *rows = calloc(peer_count, sizeof(*rows));
	struct crash_result *shared =
		mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!rows || shared == MAP_FAILED || !mkdtemp(scratch)) {
		fprintf(stderr, "crash: setup: %s\n", strerror(errno));
		return 1;
	}
	printf("crash bench: %llu messages per transport, seed %llu\n", (unsigned long long)cfg.count,
	       (unsigned long long)cfg.seed);
	double t0 = now_s();
	unsigned n = 0;
	for (unsigned i = 0; i < peer_count; i++) {
		const struct peer_ops *ops = peer_slots[i];
		const char *name = ops ? ops->name : peer_slot_names[i];
		if (!in_list(only, name, peer_slot_names[i]))
			continue;
		struct row *w = &rows[n++];
		w->name = name;
		w->describe = ops && ops->describe ? ops->describe : "";
		const char *why;
		if (!ops)
			w->skipped = "not built";
		else if (ops->flags & PEER_REFERENCE)
			w->skipped = "a reference bound, not a queue";
		else if (ops->probe && (why = ops->probe())) {
			snprintf(w->why, sizeof(w->why), "%s", why);
			w->skipped = w->why;
		} else if (!ops->create || !ops->attach || !ops->send || !ops->recv || !ops->destroy)
			w->skipped = "adapter incomplete";
		else
			run_one(ops, i, &cfg, scratch, out, shared, w);
	}
	double wall = now_s() - t0;
	daemon_rmtree(scratch);

	print_table(rows, n, &cfg);
	char path[600];
	snprintf(path, sizeof(path), "%s/crash.json", out);
	int err = write_json(path, rows, n, &cfg, wall);
	if (err)
		fprintf(stderr, "crash: %s: %s\n", path, strerror(-err));
	else
		printf("\n%s (%.0f s)\n", path, wall);
	if (only && !n)
		fprintf(stderr, "crash: --only %s matched no transport\n", only);
	free(rows);
	return err || (only && !n) ? 1 : 0;
}
