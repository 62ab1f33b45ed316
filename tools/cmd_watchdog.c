/* SPDX-License-Identifier: MIT */
/*
 * cmd_watchdog.c: `shmq watchdog NAME... [--interval-ms MS] [--once]`: runs the library's reclaim
 * pass over each queue every MS until SIGINT/SIGTERM. It keeps no state of its own: every repair
 * is one CAS in the segment, so it may be killed at any point, restarted, or run next to other
 * watchdogs and to receivers that reclaim themselves, without a message being requeued twice.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define INTERVAL_MS_MAX 3600000u

enum {
	O_INTERVAL_MS = CLI_OPT_BASE,
	O_ONCE,
	O_WD_JSON,
};

static const struct option watchdog_opts[] = {
	{"interval-ms", required_argument, NULL, O_INTERVAL_MS},
	{"once", no_argument, NULL, O_ONCE},
	{"json", no_argument, NULL, O_WD_JSON},
	CLI_TRUST_OPTIONS,
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct wd_opts {
	uint64_t interval_ms;
	int once;
	int json; /* one JSON object per line instead of text (schema shmq.watchdog/1) */
};

static int watchdog_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct wd_opts *o = ctx;
	if (opt == O_ONCE || opt == O_WD_JSON) {
		*(opt == O_ONCE ? &o->once : &o->json) = 1;
		return 0;
	}
	return cli_opt_range(cmd, "--interval-ms", arg, 1, INTERVAL_MS_MAX, &o->interval_ms);
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

static double elapsed_s(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void add_result(struct shmq_reclaim_result *sum, const struct shmq_reclaim_result *r)
{
	sum->expired += r->expired;
	sum->dead_owner += r->dead_owner;
	sum->retired_writes += r->retired_writes;
	sum->dead_lettered += r->dead_lettered;
	sum->participants_freed += r->participants_freed;
}

/* One pass's (or the run's) result for queue name: text, or with json a JSON line whose "event" is
 * "pass" (t_s: seconds since the start) or "total". */
static void print_result(const char *when, double t_s, int json, const char *name,
			 const struct shmq_reclaim_result *r)
{
	if (json) {
		printf("{\"schema\": \"shmq.watchdog/1\", \"event\": \"%s\", \"queue\": \"%s\", ",
		       t_s < 0 ? "total" : "pass", cli_bare_name(name));
		if (t_s >= 0)
			printf("\"t_s\": %.3f, ", t_s);
		printf("\"requeued\": %u, \"dead_owner\": %u, \"expired\": %u, \"dead_lettered\": %u, "
		       "\"retired_writes\": %u, \"records_freed\": %u}\n",
		       r->dead_owner + r->expired, r->dead_owner, r->expired, r->dead_lettered,
		       r->retired_writes, r->participants_freed);
		return;
	}
	printf("%s %s: requeued %u (dead owner %u, expired %u), dead-lettered %u, retired writes %u, "
	       "records freed %u\n",
	       when, name, r->dead_owner + r->expired, r->dead_owner, r->expired, r->dead_lettered,
	       r->retired_writes, r->participants_freed);
}

int cmd_watchdog(int argc, char **argv)
{
	const char *cmd = "watchdog";
	struct wd_opts o = {.interval_ms = 50};
	struct cli_args a;
	int r;

	/* NAME [options] NAME [options] ...: each parse takes one NAME and the options around it;
	 * the previous NAME stands in for argv[0] of the next parse */
	const char **names = calloc((size_t)argc, sizeof(*names));
	shmq_t **qs = calloc((size_t)argc, sizeof(*qs));
	struct shmq_reclaim_result *sums = calloc((size_t)argc, sizeof(*sums));
	int n = 0;
	if (!names || !qs || !sums) {
		r = cli_error(CLI_FAIL, cmd, "out of memory");
		goto out;
	}
	if ((r = cli_parse(cmd, argc, argv, watchdog_opts, watchdog_opt, &o, &a)))
		goto out;
	names[n++] = a.name;
	while (a.nrest > 0) {
		if ((r = cli_parse(cmd, a.nrest + 1, a.rest - 1, watchdog_opts, watchdog_opt, &o, &a)))
			goto out;
		names[n++] = a.name;
	}
	for (int i = 0; i < n; i++)
		if ((r = cli_open(cmd, names[i], &qs[i])))
			goto out;

	cli_on_stop_signals(on_signal); /* the signal also cuts the sleep short */
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!o.once && !o.json) {
		printf("watchdog: %d queue%s, a reclaim pass every %llu ms; SIGINT or SIGTERM stops it\n", n,
		       n == 1 ? "" : "s", (unsigned long long)o.interval_ms);
		if ((r = cli_flush_stdout(cmd)))
			goto out;
	}
	uint64_t passes = 0;
	while (!stop_signal) {
		for (int i = 0; i < n; i++) {
			struct shmq_reclaim_result res;
			int got = shmq_reclaim(qs[i], &res);
			if (got < 0) {
				r = cli_error(CLI_FAIL, cmd, "reclaim on '%s' failed: %s", names[i],
					      cli_strerror(got));
				goto out;
			}
			add_result(&sums[i], &res);
			if (got > 0 || o.once) {
				char when[32];
				snprintf(when, sizeof(when), "[%9.3f s]", elapsed_s(&t0));
				print_result(when, elapsed_s(&t0), o.json, names[i], &res);
			}
		}
		passes++;
		if ((r = cli_flush_stdout(cmd)) || o.once)
			goto out;
		struct timespec ts = {.tv_sec = (time_t)(o.interval_ms / 1000),
				      .tv_nsec = (long)(o.interval_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL); /* EINTR: a stop signal, checked above */
	}
	if (!o.json)
		printf("watchdog: stopped by %s after %llu passes in %.1f s\n",
		       stop_signal == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)passes,
		       elapsed_s(&t0));
	for (int i = 0; i < n; i++)
		print_result("  total", -1, o.json, names[i], &sums[i]);
	r = cli_flush_stdout(cmd);
out:
	for (int i = 0; i < n; i++)
		shmq_close(qs[i]);
	free(names);
	free(qs);
	free(sums);
	return r;
}
