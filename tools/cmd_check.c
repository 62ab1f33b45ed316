/* SPDX-License-Identifier: MIT */
/*
 * cmd_check.c: `shmq check NAME`: fsck for a segment (shmq_check_name). Prints each finding on
 * its own line, then a verdict. `shmq check --health NAME` is a monitoring probe instead
 * (health.c). Read-only: the segment is mapped PROT_READ and nothing is
 * repaired here (a reclaim pass, `shmq watchdog --once`, repairs what a crash leaves behind).
 */
#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "cli.h"
#include "health.h"

#define CLI_CHECK_ERRORS 3 /* the segment is corrupt: distinct from "could not check" (1) */

enum {
	O_HEALTH = CLI_OPT_BASE,
	O_MAX_DEPTH,
	O_MAX_AGE,
	O_MAX_DEAD,
	O_WARN_DEPTH,
	O_WARN_AGE,
	O_WARN_DEAD,
	O_CHECK_JSON,
};

static const struct option check_opts[] = {
	{"health", no_argument, NULL, O_HEALTH},
	{"max-depth", required_argument, NULL, O_MAX_DEPTH},
	{"max-age-ms", required_argument, NULL, O_MAX_AGE},
	{"max-dead", required_argument, NULL, O_MAX_DEAD},
	{"warn-depth", required_argument, NULL, O_WARN_DEPTH},
	{"warn-age-ms", required_argument, NULL, O_WARN_AGE},
	{"warn-dead", required_argument, NULL, O_WARN_DEAD},
	{"json", no_argument, NULL, O_CHECK_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct check_opts {
	int health, thresholds, json;
	struct health_limits lim;
};

static int check_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct check_opts *o = ctx;
	static const char *const names[] = {
		[O_MAX_DEPTH - O_MAX_DEPTH] = "--max-depth",  [O_MAX_AGE - O_MAX_DEPTH] = "--max-age-ms",
		[O_MAX_DEAD - O_MAX_DEPTH] = "--max-dead",    [O_WARN_DEPTH - O_MAX_DEPTH] = "--warn-depth",
		[O_WARN_AGE - O_MAX_DEPTH] = "--warn-age-ms", [O_WARN_DEAD - O_MAX_DEPTH] = "--warn-dead",
	};
	uint64_t *at[] = {
		&o->lim.depth.crit, &o->lim.age_ms.crit, &o->lim.dead.crit,
		&o->lim.depth.warn, &o->lim.age_ms.warn, &o->lim.dead.warn,
	};
	if (opt == O_HEALTH || opt == O_CHECK_JSON) {
		*(opt == O_HEALTH ? &o->health : &o->json) = 1;
		return 0;
	}
	o->thresholds = 1;
	return cli_opt_range(cmd, names[opt - O_MAX_DEPTH], arg, 0, UINT32_MAX, at[opt - O_MAX_DEPTH]);
}

/* check --health NAME: after a usage error too, or a NAME that is a directory or a link, a
 * monitoring system must read UNKNOWN (3), not the CRITICAL or WARNING of exit status 2 or 1 */
static int health_usage(int argc, char **argv, int r)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--health"))
			return r == CLI_USAGE || r == CLI_FAIL ? HEALTH_UNKNOWN : r;
	return r;
}

struct findings {
	unsigned errors, warnings;
	json_t *list; /* --json: the findings, else NULL (each printed as it comes) */
	int oom;
};

static void on_finding(void *ctx, int severity, const char *what)
{
	struct findings *f = ctx;
	const char *sev = severity == SHMQ_CHECK_ERROR ? "error" : "warning";
	if (severity == SHMQ_CHECK_ERROR)
		f->errors++;
	else
		f->warnings++;
	if (!f->list)
		printf("%s: %s\n", sev, what);
	else if (json_array_append_new(f->list, json_pack("{s:s, s:s}", "severity", sev, "what", what)))
		f->oom = 1;
}

int cmd_check(int argc, char **argv)
{
	const char *cmd = "check";
	struct findings f = {0};
	struct cli_args a;
	int r;

	struct check_opts o = {
		.lim = {{HEALTH_NONE, HEALTH_NONE}, {HEALTH_NONE, HEALTH_NONE}, {HEALTH_NONE, HEALTH_NONE}}};
	if ((r = cli_parse(cmd, argc, argv, check_opts, check_opt, &o, &a)) || (r = cli_no_rest(cmd, &a)))
		return health_usage(argc, argv, r);
	if (o.thresholds && !o.health)
		return cli_error(CLI_USAGE, cmd, "--max-* and --warn-* apply only to --health");
	if (o.json && o.health)
		return health_usage(argc, argv,
				    cli_error(CLI_USAGE, cmd, "--json does not apply to --health"));
	if (o.json && !(f.list = json_array()))
		return cli_error(CLI_FAIL, cmd, "out of memory");
	if (o.health) {
		const struct health_limit *l[] = {&o.lim.depth, &o.lim.age_ms, &o.lim.dead};
		static const char *const what[] = {"depth", "age-ms", "dead"};
		for (int i = 0; i < 3; i++)
			if (l[i]->warn != HEALTH_NONE && l[i]->crit != HEALTH_NONE && l[i]->warn > l[i]->crit)
				return health_usage(argc, argv,
						    cli_error(CLI_USAGE, cmd,
							      "--warn-%s %llu is above --max-%s %llu",
							      what[i], (unsigned long long)l[i]->warn,
							      what[i], (unsigned long long)l[i]->crit));
		r = health_check(a.name, &o.lim);
		int f = cli_flush_stdout(cmd);
		return f ? HEALTH_UNKNOWN : r;
	}
	const char *shown = cli_bare_name(a.name);
	int n = shmq_check_name(a.name, on_finding, &f);
	if (n < 0)
		json_decref(f.list);
	if (n == -ENOENT)
		return cli_error(CLI_FAIL, cmd, "no such queue '%s'", a.name);
	if (n < 0)
		return cli_error(CLI_FAIL, cmd, "cannot check '%s': %s", a.name, cli_strerror(n));
	if (f.list) {
		json_t *root = json_pack("{s:s, s:s, s:b, s:I, s:I, s:o}", "schema", "shmq.check/1", "queue",
					 shown, "sound", !f.errors, "errors", (json_int_t)f.errors,
					 "warnings", (json_int_t)f.warnings, "findings", f.list);
		if (!root || f.oom) {
			json_decref(root);
			return cli_error(CLI_FAIL, cmd, "out of memory building the JSON");
		}
		json_dumpf(root, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(root);
	} else if (f.errors)
		printf("%s: %u error%s, %u warning%s: the segment is corrupt\n", shown, f.errors,
		       f.errors == 1 ? "" : "s", f.warnings, f.warnings == 1 ? "" : "s");
	else if (f.warnings)
		printf("%s: sound, %u warning%s\n", shown, f.warnings, f.warnings == 1 ? "" : "s");
	else
		printf("%s: sound\n", shown);
	if ((r = cli_flush_stdout(cmd)))
		return r;
	return f.errors ? CLI_CHECK_ERRORS : CLI_OK;
}
