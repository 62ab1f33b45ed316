/* SPDX-License-Identifier: MIT */
/*
 * cmd_stat.c: `shmq stat NAME [--json | --prometheus | --watch]`: one snapshot through a read-only view
 * (no participant record, no lock, nothing written), printed in the format asked for. The
 * figures and their names live in stat.c; this file only picks the format.
 */
#include <errno.h>

#include "cli.h"
#include "stat.h"

enum {
	O_JSON = CLI_OPT_BASE,
	O_PROMETHEUS,
	O_WATCH,
	O_INTERVAL,
	O_REFRESHES,
};

static const struct option stat_opts[] = {
	{"json", no_argument, NULL, O_JSON},
	{"prometheus", no_argument, NULL, O_PROMETHEUS},
	{"watch", no_argument, NULL, O_WATCH},
	{"interval-ms", required_argument, NULL, O_INTERVAL},
	{"refreshes", required_argument, NULL, O_REFRESHES},
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
	case O_REFRESHES:
		o->has_refreshes = 1;
		return cli_opt_range(cmd, "--refreshes", arg, 1, UINT32_MAX, &o->refreshes);
	default: /* --json or --prometheus: cli_parse refuses either one twice */
		if (o->format != FMT_TEXT)
			return cli_error(CLI_USAGE, cmd, "--json and --prometheus exclude each other");
		o->format = opt == O_JSON ? FMT_JSON : FMT_PROMETHEUS;
		return 0;
	}
}

int cmd_stat(int argc, char **argv)
{
	const char *cmd = "stat";
	struct stat_opts o = {.format = FMT_TEXT, .interval_ms = 1000};
	struct stat_report rep;
	struct cli_owner owner;
	struct cli_args a;
	shmq_view_t *v;
	int r;

	if ((r = cli_parse(cmd, argc, argv, stat_opts, stat_opt, &o, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	if ((o.has_interval || o.has_refreshes) && !o.watch)
		return cli_error(CLI_USAGE, cmd, "--interval-ms and --refreshes apply only to --watch");
	if (o.watch && o.format != FMT_TEXT)
		return cli_error(CLI_USAGE, cmd, "--watch does not go with --json or --prometheus");
	if (o.watch)
		return stat_watch(cmd, a.name, o.interval_ms, o.has_refreshes ? o.refreshes : 0);
	if ((r = cli_view_open(cmd, a.name, &v, &owner)))
		return r;
	if ((r = stat_report_load(v, a.name, &rep))) {
		r = cli_error(CLI_FAIL, cmd, "cannot read the statistics of '%s': %s", a.name,
			      cli_strerror(r));
		goto out;
	}
	rep.owner = owner;
	switch (o.format) {
	case FMT_TEXT:
		stat_print_text(&rep);
		break;
	case FMT_JSON:
		if (stat_print_json(&rep) == -ENOMEM) {
			r = cli_error(CLI_FAIL, cmd, "out of memory building the JSON");
			goto out_free;
		}
		break;
	case FMT_PROMETHEUS:
		stat_print_prom(&rep);
		break;
	}
	r = cli_flush_stdout(cmd);
out_free:
	stat_report_free(&rep);
out:
	shmq_view_close(v);
	return r;
}
