/* SPDX-License-Identifier: MIT */
/*
 * cmd_stat.c: `shmq stat NAME [--json | --prometheus | --watch]`: one snapshot through a read-only view
 * (no participant record, no lock, nothing written), printed in the format asked for; with
 * --prometheus, of several queues named, or of all (none named, or --all), in one exposition. The
 * figures and their names live in stat.c; this file only picks the format.
 */
#include <errno.h>
#include <stdlib.h>

#include "cli.h"
#include "stat.h"

enum {
	O_JSON = CLI_OPT_BASE,
	O_PROMETHEUS,
	O_WATCH,
	O_INTERVAL,
	O_REFRESHES,
	O_ALL,
};

static const struct option stat_opts[] = {
	{"json", no_argument, NULL, O_JSON},
	{"prometheus", no_argument, NULL, O_PROMETHEUS},
	{"watch", no_argument, NULL, O_WATCH},
	{"interval-ms", required_argument, NULL, O_INTERVAL},
	{"refreshes", required_argument, NULL, O_REFRESHES},
	{"all", no_argument, NULL, O_ALL},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

enum stat_format {
	FMT_TEXT,
	FMT_JSON,
	FMT_PROMETHEUS,
};

struct stat_opts {
	enum stat_format format;
	int watch, has_interval, has_refreshes, all;
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
	case O_REFRESHES:
		o->has_refreshes = 1;
		return cli_opt_range(cmd, "--refreshes", arg, 1, UINT32_MAX, &o->refreshes);
	case O_ALL:
		o->all = 1;
		return 0;
	default: /* --json or --prometheus: cli_parse refuses either one twice */
		if (o->format != FMT_TEXT)
			return cli_error(CLI_USAGE, cmd, "--json and --prometheus exclude each other");
		o->format = opt == O_JSON ? FMT_JSON : FMT_PROMETHEUS;
		return 0;
	}
}

/* --prometheus: the queues named (each must be one), or all of them, in one exposition */
static int stat_prom(const char *cmd, char **names, int n)
{
	struct stat_many m;
	int r = stat_many_load(cmd, n ? names : NULL, (size_t)n, 1, &m);
	if (r)
		return r;
	stat_print_prom(stdout, m.r, m.n);
	r = cli_flush_stdout(cmd);
	stat_many_free(&m);
	return r;
}

int cmd_stat(int argc, char **argv)
{
	const char *cmd = "stat";
	struct stat_opts o = {.format = FMT_TEXT, .interval_ms = 1000};
	struct stat_report rep;
	struct cli_owner owner;
	shmq_view_t *v;
	char **names;
	int r, n;

	if ((r = cli_parse_names(cmd, argc, argv, stat_opts, stat_opt, &o, &names, &n)))
		return r;
	if ((o.has_interval || o.has_refreshes) && !o.watch)
		r = cli_error(CLI_USAGE, cmd, "--interval-ms and --refreshes apply only to --watch");
	else if (o.watch && o.format != FMT_TEXT)
		r = cli_error(CLI_USAGE, cmd, "--watch does not go with --json or --prometheus");
	else if (o.all && o.format != FMT_PROMETHEUS)
		r = cli_error(CLI_USAGE, cmd, "--all applies only to --prometheus");
	else if (o.all && n)
		r = cli_error(CLI_USAGE, cmd, "--all and a queue NAME exclude each other");
	else if (o.format == FMT_PROMETHEUS)
		r = stat_prom(cmd, names, n);
	else if (!n)
		r = cli_error(CLI_USAGE, cmd, "missing queue NAME");
	else if (n > 1)
		r = cli_error(CLI_USAGE, cmd, "unexpected argument '%s' (several queues: --prometheus only)",
			      names[1]);
	else
		r = -1;
	const char *name = n ? names[0] : NULL;
	free(names);
	if (r != -1)
		return r;
	if (o.watch)
		return stat_watch(cmd, name, o.interval_ms, o.has_refreshes ? o.refreshes : 0);
	if ((r = cli_view_open(cmd, name, &v, &owner)))
		return r;
	if ((r = stat_report_load(v, name, &rep))) {
		r = cli_error(CLI_FAIL, cmd, "cannot read the statistics of '%s': %s", name, cli_strerror(r));
		goto out;
	}
	rep.owner = owner;
	if (o.format == FMT_JSON && stat_print_json(&rep) == -ENOMEM) {
		r = cli_error(CLI_FAIL, cmd, "out of memory building the JSON");
		goto out_free;
	}
	if (o.format == FMT_TEXT)
		stat_print_text(&rep);
	r = cli_flush_stdout(cmd);
out_free:
	stat_report_free(&rep);
out:
	shmq_view_close(v);
	return r;
}
