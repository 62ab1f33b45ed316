/* SPDX-License-Identifier: MIT */
/*
 * cmd_check.c: `shmq check NAME`: fsck for a segment (shmq_check_name). Prints each finding on
 * its own line, then a verdict. Read-only: the segment is mapped PROT_READ and nothing is
 * repaired here (a reclaim pass, `shmq watchdog --once`, repairs what a crash leaves behind).
 */
#include <errno.h>

#include "cli.h"

#define CLI_CHECK_ERRORS 3 /* the segment is corrupt: distinct from "could not check" (1) */

static const struct option check_opts[] = {
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct findings {
	unsigned errors, warnings;
};

static void on_finding(void *ctx, int severity, const char *what)
{
	struct findings *f = ctx;
	if (severity == SHMQ_CHECK_ERROR)
		f->errors++;
	else
		f->warnings++;
	printf("%s: %s\n", severity == SHMQ_CHECK_ERROR ? "error" : "warning", what);
}

int cmd_check(int argc, char **argv)
{
	const char *cmd = "check";
	struct findings f = {0};
	struct cli_args a;
	int r;

	if ((r = cli_parse(cmd, argc, argv, check_opts, NULL, NULL, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	const char *shown = cli_bare_name(a.name);
	int n = shmq_check_name(a.name, on_finding, &f);
	if (n == -ENOENT)
		return cli_error(CLI_FAIL, cmd, "no such queue '%s'", a.name);
	if (n < 0)
		return cli_error(CLI_FAIL, cmd, "cannot check '%s': %s", a.name, cli_strerror(n));
	if (f.errors)
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
