/* SPDX-License-Identifier: MIT */
/*
 * cmd_dlq.c: `shmq dlq NAME list [--json] | redrive [--count N] | purge [--count N]`: the
 * dead-letter queue of a queue, oldest first. Dead letters stay in their slots (reason, delivery
 * count, last holder); redrive puts them back with a fresh delivery count, purge deletes them.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define PREVIEW_BYTES 48 /* of each payload in the text listing */

enum {
	O_JSON = CLI_OPT_BASE,
	O_COUNT,
};

static const struct option dlq_opts[] = {
	{"json", no_argument, NULL, O_JSON},
	{"count", required_argument, NULL, O_COUNT},
	CLI_TRUST_OPTIONS,
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct dlq_opts {
	int json;
	int has_count;
	uint64_t count;
};

static int dlq_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct dlq_opts *o = ctx;
	if (opt == O_JSON) {
		o->json = 1;
		return 0;
	}
	o->has_count = 1;
	return cli_opt_range(cmd, "--count", arg, 1, SHMQ_CAPACITY_MAX, &o->count);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int list(const char *cmd, shmq_t *q, const char *name, int json)
{
	struct shmq_stats st;
	int r = shmq_stats(q, &st);
	if (r)
		return cli_error(CLI_FAIL, cmd, "cannot read '%s': %s", name, cli_strerror(r));
	/* the DLQ never holds more than dlq_max for long; a few more may appear meanwhile */
	unsigned max = st.dlq_max + 64;
	struct shmq_dead_letter *dl = calloc(max, sizeof(*dl));
	if (!dl)
		return cli_error(CLI_FAIL, cmd, "out of memory");
	int n = shmq_dlq_list(q, dl, max);
	if (n < 0) {
		free(dl);
		return cli_error(CLI_FAIL, cmd, "cannot list the dead letters of '%s': %s", name,
				 cli_strerror(n));
	}
	unsigned shown = (unsigned)n < max ? (unsigned)n : max;
	uint64_t now = mono_ms();
	if (json) {
		printf("[");
		for (unsigned i = 0; i < shown; i++) {
			const struct shmq_dead_letter *d = &dl[i];
			printf("%s\n  {\"id\": %llu, \"reason\": \"%s\", \"deliveries\": %u, \"last_pid\": "
			       "%d, "
			       "\"dead_for_ms\": %llu, \"len\": %u, \"payload\": \"",
			       i ? "," : "", (unsigned long long)d->id, shmq_dead_reason_str(d->reason),
			       d->deliveries, d->last_pid,
			       (unsigned long long)(now > d->dead_ms ? now - d->dead_ms : 0), d->len);
			cli_put_json_bytes(d->data, d->len);
			printf("\"}");
		}
		printf("%s]\n", shown ? "\n" : "");
	} else {
		printf("%u dead letter%s in %s (at most %u kept)\n", shown, shown == 1 ? "" : "s",
		       cli_bare_name(name), st.dlq_max);
		if (shown)
			printf("%-12s %-16s %10s %8s %10s  %s\n", "id", "reason", "deliveries", "last pid",
			       "dead for", "payload");
		for (unsigned i = 0; i < shown; i++) {
			const struct shmq_dead_letter *d = &dl[i];
			char age[32];
			snprintf(age, sizeof(age), "%.1f s",
				 (double)(now > d->dead_ms ? now - d->dead_ms : 0) / 1000.0);
			printf("%-12llu %-16s %10u %8d %10s  ", (unsigned long long)d->id,
			       shmq_dead_reason_str(d->reason), d->deliveries, d->last_pid, age);
			cli_put_preview(d->data, d->len, PREVIEW_BYTES);
			putchar('\n');
		}
	}
	free(dl);
	return cli_flush_stdout(cmd);
}

int cmd_dlq(int argc, char **argv)
{
	const char *cmd = "dlq";
	struct dlq_opts o = {0};
	struct cli_args a;
	shmq_t *q;
	int r;

	if ((r = cli_parse(cmd, argc, argv, dlq_opts, dlq_opt, &o, &a)))
		return r;
	const char *name = a.name;
	if (a.nrest == 0)
		return cli_error(CLI_USAGE, cmd, "missing action: list, redrive or purge");
	const char *action = a.rest[0];
	int is_list = !strcmp(action, "list"), is_redrive = !strcmp(action, "redrive");
	if (!is_list && !is_redrive && strcmp(action, "purge"))
		return cli_error(CLI_USAGE, cmd, "unknown action '%s': list, redrive or purge", action);
	/* options after the action: the action stands in for argv[0] */
	if (a.nrest > 1 && !a.dashdash) {
		if ((r = cli_parse(cmd, a.nrest + 1, a.rest - 1, dlq_opts, dlq_opt, &o, &a)))
			return r;
		if ((r = cli_no_rest(cmd, &a)))
			return r;
	} else if (a.nrest > 1) {
		return cli_error(CLI_USAGE, cmd, "unexpected argument '%s'", a.rest[1]);
	}
	if (o.has_count && is_list)
		return cli_error(CLI_USAGE, cmd, "--count applies only to redrive and purge");

	if ((r = cli_open(cmd, name, &q)))
		return r;
	if (is_list) {
		r = list(cmd, q, name, o.json);
	} else {
		unsigned max = o.has_count ? (unsigned)o.count : UINT32_MAX;
		int n = is_redrive ? shmq_dlq_redrive(q, max) : shmq_dlq_purge(q, max);
		if (n < 0) {
			r = cli_error(CLI_FAIL, cmd, "cannot %s the dead letters of '%s': %s", action, name,
				      cli_strerror(n));
		} else {
			if (o.json)
				printf("{\"schema\": \"shmq.dlq/1\", \"queue\": \"%s\", \"action\": \"%s\", "
				       "\"count\": %d}\n",
				       cli_bare_name(name), action, n);
			else
				printf("%s %d dead letter%s\n", is_redrive ? "redrove" : "purged", n,
				       n == 1 ? "" : "s");
			r = cli_flush_stdout(cmd);
		}
	}
	shmq_close(q);
	return r;
}
