/* SPDX-License-Identifier: MIT */
/* cmd_stat.c: `shmq stat`: formats one shmq_stats() snapshot; computes nothing of its own. */
#include "cli.h"

enum {
	O_WATCH = CLI_OPT_BASE,
	O_INTERVAL,
	O_REFRESHES,
};

static const struct option stat_opts[] = {
	{"watch", no_argument, NULL, O_WATCH},
	{"interval-ms", required_argument, NULL, O_INTERVAL},
	{"refreshes", required_argument, NULL, O_REFRESHES},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct stat_opts {
	int watch, has_interval, has_refreshes;
	uint64_t interval_ms, refreshes;
};

static int stat_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct stat_opts *o = ctx;
	switch (opt) {
	case O_WATCH:
		o->watch = 1;
		return 0;
	case O_INTERVAL:
		o->has_interval = 1;
		return cli_opt_range(cmd, "--interval-ms", arg, 10, 3600000, &o->interval_ms);
	default:
		o->has_refreshes = 1;
		return cli_opt_range(cmd, "--refreshes", arg, 1, UINT32_MAX, &o->refreshes);
	}
}

static void num(const char *label, uint64_t v) { printf("  %-24s %llu\n", label, (unsigned long long)v); }

/* 268288 -> "262.0 KiB" */
static void human(char *buf, size_t sz, uint64_t bytes)
{
	static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)bytes;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	snprintf(buf, sz, "%.1f %s", v, units[u]);
}

static void print_stats(const char *name, const struct shmq_stats *st)
{
	const struct shmq_config *c = &st->config;
	char size[32];
	human(size, sizeof(size), st->segment_bytes);
	printf("queue %s\n", name[0] == '/' ? name + 1 : name);
	printf("  %-24s %llu bytes (%s)\n", "segment", (unsigned long long)st->segment_bytes, size);
	printf("config\n");
	printf("  %-24s %u slots\n", "capacity", c->capacity);
	printf("  %-24s %u bytes\n", "slot size", c->slot_size);
	printf("  %-24s %u bytes\n", "max payload", st->max_payload);
	printf("  %-24s %u ms\n", "lease", c->lease_ms);
	printf("  %-24s %u\n", "max deliveries", c->max_deliveries);
	printf("  %-24s %u ms, doubling up to %u ms\n", "retry backoff", c->retry_base_ms, c->retry_max_ms);
	printf("  %-24s %04o\n", "mode", (unsigned)c->mode);
	printf("  %-24s %u\n", "dead letters kept (max)", st->dlq_max);
	if (c->reclaim_interval_ms)
		printf("  %-24s every %u ms, by receivers\n", "reclaim pass", c->reclaim_interval_ms);
	else
		printf("  %-24s only by a watchdog or shmq_reclaim\n", "reclaim pass");
	printf("depth (slots)\n");
	num("ready", st->ready);
	num("in flight", st->inflight);
	num("delayed", st->delayed);
	num("dead-lettered", st->dead);
	num("being written", st->writing);
	num("free", st->free_slots);
	printf("participants\n");
	printf("  %-24s %u (this stat included)\n", "alive", st->participants);
	printf("counters\n");
	num("sent", st->sent);
	num("received", st->received);
	num("acked", st->acked);
	num("nacked", st->nacked);
	num("retried", st->retried);
	num("redelivered", st->redelivered);
	num("extended", st->extended);
	num("stale acks", st->stale);
	num("reclaimed (expired)", st->reclaimed_expired);
	num("reclaimed (dead owner)", st->reclaimed_dead_owner);
	num("retired writes", st->retired_writes);
	num("reclaim passes", st->reclaim_passes);
	num("dead-lettered", st->dead_lettered);
	num("rejected", st->rejected);
	num("redriven", st->redriven);
	num("purged", st->purged);
	num("dead letters dropped", st->dlq_dropped);
	num("producer waits", st->producer_waits);
	num("consumer waits", st->consumer_waits);
	num("next message id", st->next_id);
}

int cmd_stat(int argc, char **argv)
{
	const char *cmd = "stat";
	struct shmq_stats st;
	struct cli_args a;
	struct stat_opts o = {.interval_ms = 1000};
	shmq_t *q;
	int r;

	if ((r = cli_parse(cmd, argc, argv, stat_opts, stat_opt, &o, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	if ((o.has_interval || o.has_refreshes) && !o.watch)
		return cli_error(CLI_USAGE, cmd, "--interval-ms and --refreshes apply only to --watch");
	if (o.watch)
		return stat_watch(cmd, a.name, o.interval_ms, o.has_refreshes ? o.refreshes : 0);
	if ((r = cli_open(cmd, a.name, &q)))
		return r;
	if ((r = shmq_stats(q, &st))) {
		r = cli_error(CLI_FAIL, cmd, "cannot read the statistics of '%s': %s", a.name,
			      cli_strerror(r));
		goto out;
	}
	print_stats(a.name, &st);
	r = cli_flush_stdout(cmd);
out:
	shmq_close(q);
	return r;
}
