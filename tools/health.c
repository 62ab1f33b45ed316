/* SPDX-License-Identifier: MIT */
/*
 * health.c: `shmq check --health NAME`: a monitoring probe in the convention of Nagios plugins
 * (Icinga, Sensu, Zabbix's and Kubernetes' exec probes read the same): one status line, then the
 * exit status 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. The figures are the queue's depth (ready,
 * in flight and delayed messages: sent and not yet acked or dead-lettered), the age of its oldest
 * ready message and its dead letters; each is WARNING above its --warn-* threshold and CRITICAL
 * above its --max-* one (a value at the threshold is fine). A queue that is missing, not a queue,
 * or corrupt (an error of the fsck) is UNKNOWN: there is no figure to judge. Read-only.
 */
#include <errno.h>
#include <stdio.h>

#include "cli.h"
#include "health.h"
#include "stat.h"

static const char *const state_names[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};

static int unknown(const char *name, const char *why)
{
	printf("SHMQ UNKNOWN - %s: %s\n", cli_bare_name(name), why);
	return HEALTH_UNKNOWN;
}

static void first_error(void *ctx, int severity, const char *what)
{
	char *why = ctx;
	if (severity == SHMQ_CHECK_ERROR && !why[0])
		snprintf(why, CLI_WHY_MAX, "corrupt: %s", what);
}

/* The state of value against its limits (HEALTH_NONE: not set). */
static int judge(uint64_t v, const struct health_limit *l)
{
	if (l->crit != HEALTH_NONE && v > l->crit)
		return HEALTH_CRITICAL;
	if (l->warn != HEALTH_NONE && v > l->warn)
		return HEALTH_WARNING;
	return HEALTH_OK;
}

/* "depth 150 (> 100)": the figure, and the threshold it passed if any */
static void figure(char *buf, size_t sz, const char *what, uint64_t v, const char *unit, int state,
		   const struct health_limit *l)
{
	int n = snprintf(buf, sz, "%s %llu%s", what, (unsigned long long)v, unit);
	if (state != HEALTH_OK && n > 0 && (size_t)n < sz)
		snprintf(buf + n, sz - (size_t)n, " (> %llu)",
			 (unsigned long long)(state == HEALTH_CRITICAL ? l->crit : l->warn));
}

/* " label=value[;warn;crit]" in Nagios performance data */
static void perf(const char *label, uint64_t v, const struct health_limit *l)
{
	printf(" %s=%llu", label, (unsigned long long)v);
	if (l->warn == HEALTH_NONE && l->crit == HEALTH_NONE)
		return;
	putchar(';');
	if (l->warn != HEALTH_NONE)
		printf("%llu", (unsigned long long)l->warn);
	putchar(';');
	if (l->crit != HEALTH_NONE)
		printf("%llu", (unsigned long long)l->crit);
}

int health_check(const char *name, const struct health_limits *lim)
{
	char why[CLI_WHY_MAX] = "";
	struct stat_report rep;
	struct cli_obj o;

	if (cli_obj_probe(name, 1, &o) != CLI_OBJ_QUEUE)
		return unknown(name, o.kind == CLI_OBJ_GONE ? "no such queue" : o.why);
	int err = shmq_check_name(name, first_error, why);
	if (err < 0 || why[0]) {
		shmq_view_close(o.view);
		return unknown(name, why[0] ? why : cli_strerror(err));
	}
	err = stat_report_load(o.view, name, &rep);
	shmq_view_close(o.view);
	if (err)
		return unknown(name, cli_strerror(err));

	const struct shmq_stats *st = &rep.s.stats;
	uint64_t depth = st->ready + st->inflight + st->delayed, age = rep.s.oldest_ready_age_ms,
		 dead = st->dead;
	int sd = judge(depth, &lim->depth), sa = judge(age, &lim->age_ms), sx = judge(dead, &lim->dead);
	int state = sd > sa ? sd : sa;
	state = state > sx ? state : sx;
	char fd[64], fa[64], fx[64];
	figure(fd, sizeof(fd), "depth", depth, "", sd, &lim->depth);
	figure(fa, sizeof(fa), "oldest", age, " ms", sa, &lim->age_ms);
	figure(fx, sizeof(fx), "dead", dead, "", sx, &lim->dead);
	printf("SHMQ %s - %s: %s, %s, %s |", state_names[state], rep.name, fd, fa, fx);
	perf("depth", depth, &lim->depth);
	perf("age_ms", age, &lim->age_ms);
	perf("dead", dead, &lim->dead);
	putchar('\n');
	stat_report_free(&rep);
	return state;
}
