/* SPDX-License-Identifier: MIT */
/* cli.c: helpers the subcommands share: errors, option parsing, numbers, names, opening. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_error(int code, const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fputs(cmd ? "shmq: " : "shmq", stderr);
	if (cmd)
		fputs(cmd, stderr);
	fputs(": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (code == CLI_USAGE)
		fputs("try 'shmq help'\n", stderr);
	return code;
}

static const char *long_name(const struct option *longopts, int val)
{
	for (const struct option *o = longopts; o->name; o++)
		if (o->val == val)
			return o->name;
	return "?";
}

/* An unknown long option, or an abbreviation of more than one (getopt tells them apart only in
 * its own messages). */
static int bad_long(const char *cmd, const struct option *longopts, const char *arg)
{
	int len = (int)strcspn(arg, "="), n = 0;
	const char *match[2] = {NULL, NULL};
	if (len > 2 && !strncmp(arg, "--", 2))
		for (const struct option *o = longopts; o->name; o++)
			if (!strncmp(o->name, arg + 2, (size_t)len - 2) && n++ < 2)
				match[n - 1] = o->name;
	if (n > 1)
		return cli_error(CLI_USAGE, cmd, "ambiguous option '%.*s' (matches --%s, --%s%s)", len, arg,
				 match[0], match[1], n > 2 ? " and more" : "");
	return cli_error(CLI_USAGE, cmd, "unknown option '%.*s'", len, arg);
}

/* One getopt_long pass over argv (argv[0] is not looked at). *dashdash tells whether it stopped
 * at "--", after which nothing is an option. */
/* seen: the long options met so far (bit c - CLI_OPT_BASE), across both passes of cli_parse: an
 * option given twice is an error, not a silent "the last one wins" */
static int getopt_pass(const char *cmd, int argc, char **argv, const struct option *longopts, cli_opt_fn fn,
		       void *ctx, int *dashdash, uint64_t *seen)
{
	int c, r;
	/* 0, not 1: glibc then re-initialises its scan state, which would otherwise carry over from
	 * the previous pass (a half-scanned option cluster, the ordering mode) */
	optind = 0;
	opterr = 0; /* our own messages, in our one-line format */
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		const char *arg = argv[optind - 1];
		switch (c) {
		case 'h':
			cli_help(stdout, cmd);
			return CLI_DONE;
		case ':':
			if (optopt >= CLI_OPT_BASE)
				return cli_error(CLI_USAGE, cmd, "option '--%s' needs a value",
						 long_name(longopts, optopt));
			return cli_error(CLI_USAGE, cmd, "option '-%c' needs a value", optopt);
		case '?':
			/* optopt: a long option given a value it does not take (its val), an unknown
			 * short option (the letter), or 0 for an unknown or ambiguous long option */
			if (optopt >= CLI_OPT_BASE)
				return cli_error(CLI_USAGE, cmd, "option '--%s' takes no value",
						 long_name(longopts, optopt));
			if (optopt)
				return cli_error(CLI_USAGE, cmd, "unknown option '-%c'", optopt);
			return bad_long(cmd, longopts, arg);
		default:
			if (c >= CLI_OPT_BASE && c - CLI_OPT_BASE < 64) {
				uint64_t bit = 1ULL << (c - CLI_OPT_BASE);
				if (*seen & bit)
					return cli_error(CLI_USAGE, cmd, "option '--%s' given twice",
							 long_name(longopts, c));
				*seen |= bit;
			}
			if (c == CLI_OPT_TRUST_OWNER || c == CLI_OPT_TRUST_GROUP)
				r = cli_trust_opt(cmd, c, optarg);
			else
				r = fn ? fn(cmd, c, optarg, ctx) : 0;
			if (r)
				return r;
		}
	}
	*dashdash = optind > 1 && !strcmp(argv[optind - 1], "--");
	return 0;
}

int cli_parse(const char *cmd, int argc, char **argv, const struct option *longopts, cli_opt_fn fn, void *ctx,
	      struct cli_args *out)
{
	int r, dashdash;
	uint64_t seen = 0;
	memset(out, 0, sizeof(*out));
	if ((r = getopt_pass(cmd, argc, argv, longopts, fn, ctx, &dashdash, &seen)))
		return r;
	if (optind >= argc)
		return cli_error(CLI_USAGE, cmd, "missing queue NAME");
	int at = optind; /* NAME's index: it stands in for argv[0] in the second pass */
	out->name = argv[at];
	if ((r = cli_check_name(cmd, out->name)) || (r = cli_check_entry(cmd, out->name)))
		return r;
	int next = 1;
	if (!dashdash) {
		if ((r = getopt_pass(cmd, argc - at, argv + at, longopts, fn, ctx, &dashdash, &seen)))
			return r;
		next = optind;
	}
	out->rest = argv + at + next;
	out->nrest = argc - at - next;
	out->dashdash = dashdash;
	return 0;
}

int cli_parse_opts(const char *cmd, int argc, char **argv, const struct option *longopts, cli_opt_fn fn,
		   void *ctx)
{
	int r, dashdash;
	uint64_t seen = 0;
	if ((r = getopt_pass(cmd, argc, argv, longopts, fn, ctx, &dashdash, &seen)))
		return r;
	if (optind < argc)
		return cli_error(CLI_USAGE, cmd, "unexpected argument '%s'", argv[optind]);
	return 0;
}

int cli_parse_names(const char *cmd, int argc, char **argv, const struct option *longopts, cli_opt_fn fn,
		    void *ctx, char ***names, int *n)
{
	int r, dashdash, at = 0; /* argv[at] stands in for argv[0] in each pass */
	uint64_t seen = 0;
	char **v = calloc((size_t)argc + 1, sizeof(*v));
	*names = NULL;
	*n = 0;
	if (!v)
		return cli_error(CLI_FAIL, cmd, "out of memory");
	for (;;) {
		if ((r = getopt_pass(cmd, argc - at, argv + at, longopts, fn, ctx, &dashdash, &seen)))
			goto fail;
		at += optind;
		if (at >= argc)
			break;
		if ((r = cli_check_name(cmd, argv[at])) || (r = cli_check_entry(cmd, argv[at])))
			goto fail;
		v[(*n)++] = argv[at];
		if (dashdash) { /* everything after "--" is a NAME */
			while (++at < argc) {
				if ((r = cli_check_name(cmd, argv[at])) ||
				    (r = cli_check_entry(cmd, argv[at])))
					goto fail;
				v[(*n)++] = argv[at];
			}
			break;
		}
	}
	*names = v;
	return 0;
fail:
	free(v);
	*n = 0;
	return r;
}

int cli_no_rest(const char *cmd, const struct cli_args *a)
{
	if (a->nrest > 0)
		return cli_error(CLI_USAGE, cmd, "unexpected argument '%s'", a->rest[0]);
	return 0;
}

int cli_parse_u64(const char *s, int base, uint64_t max, uint64_t *out)
{
	if (!s || !*s)
		return -EINVAL;
	/* strtoull alone would take blanks, a sign (and negate!) and, in base 0, prefixes */
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > (base == 8 ? '7' : '9'))
			return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int cli_opt_range(const char *cmd, const char *opt, const char *arg, uint64_t min, uint64_t max,
		  uint64_t *out)
{
	if (cli_parse_u64(arg, 10, max, out) || *out < min) {
		if (max == UINT64_MAX)
			return cli_error(CLI_USAGE, cmd,
					 "%s must be a whole number of at least %llu, got '%s'", opt,
					 (unsigned long long)min, arg);
		return cli_error(CLI_USAGE, cmd, "%s must be a whole number between %llu and %llu, got '%s'",
				 opt, (unsigned long long)min, (unsigned long long)max, arg);
	}
	return 0;
}

const char *cli_bare_name(const char *name) { return name[0] == '/' ? name + 1 : name; }

int cli_no_dedup(const char *cmd, const char *what, const char *name)
{
	return cli_error(CLI_FAIL, cmd, "%squeue '%s' has no dedup table (created with --dedup-window-ms 0)",
			 what, name);
}

int cli_check_name(const char *cmd, const char *name)
{
	const char *n = cli_bare_name(name);
	if (!*n)
		return cli_error(CLI_USAGE, cmd, "queue NAME must not be empty");
	if (!strncmp(name, "/dev/shm/", 9) && name[9] && !strchr(name + 9, '/'))
		return cli_error(CLI_USAGE, cmd, "'%s' is a path: give the queue NAME, '%s'", name, name + 9);
	if (strchr(n, '/'))
		return cli_error(CLI_USAGE, cmd,
				 "invalid queue name '%s': '/' is allowed only as its first character", name);
	if (!strcmp(n, ".") || !strcmp(n, ".."))
		return cli_error(CLI_USAGE, cmd, "invalid queue name '%s'", name);
	if (strlen(n) + 1 > SHMQ_NAME_MAX)
		return cli_error(CLI_USAGE, cmd,
				 "queue name too long: %zu bytes with the leading '/', at most %d",
				 strlen(n) + 1, SHMQ_NAME_MAX);
	return 0;
}

/* indexed by enum shmq_dispatch */
static const char *const dispatch_names[] = {"round-robin", "random", "weighted", "key-hash", "least-loaded"};

const char *cli_dispatch_name(uint32_t dispatch)
{
	return dispatch < sizeof(dispatch_names) / sizeof(dispatch_names[0]) ? dispatch_names[dispatch]
									     : "unknown";
}

int cli_dispatch_parse(const char *s, uint32_t *out)
{
	for (uint32_t i = 0; i < sizeof(dispatch_names) / sizeof(dispatch_names[0]); i++)
		if (!strcmp(s, dispatch_names[i])) {
			*out = i;
			return 0;
		}
	return -EINVAL;
}

const char *cli_strerror(int err)
{
	static char buf[256];
	const char *text = shmq_strerror(err);
	/* the library has a text for each error it documents and one generic text for the rest (it
	 * never returns EDOM): for those, the system's text says what happened */
	if (err == -EDOM || err == EDOM || strcmp(text, shmq_strerror(-EDOM)))
		return text;
	snprintf(buf, sizeof(buf), "%s (%s)", text, strerror(err < 0 ? -err : err));
	return buf;
}

int cli_open(const char *cmd, const char *name, shmq_t **q)
{
	int err = shmq_open_opts(name, cli_trust(), q);
	if (err == -EPERM)
		return cli_refused(cmd, name);
	if (err == -ENOENT)
		return cli_error(CLI_FAIL, cmd, "no such queue '%s'", name);
	/* shmq_strerror's text for EAGAIN is about send and recv */
	if (err == -EAGAIN)
		return cli_error(
			CLI_FAIL, cmd,
			"cannot open queue '%s': it is not initialised (its creator is still at it, or died "
			"before it finished)",
			name);
	if (err)
		return cli_error(CLI_FAIL, cmd, "cannot open queue '%s': %s", name, cli_strerror(err));
	return 0;
}

int cli_flush_stdout(const char *cmd)
{
	errno = 0;
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	/* the reader left (`shmq list | head`): what it did not read it did not want; as a tool that
	 * SIGPIPE would end silently, say nothing, but do not claim success either */
	if (errno == EPIPE)
		return CLI_FAIL;
	return cli_error(CLI_FAIL, cmd, "cannot write to standard output: %s",
			 errno ? strerror(errno) : "write error");
}

void cli_put_preview(const void *data, size_t n, size_t max)
{
	const unsigned char *p = data;
	size_t k = n < max ? n : max;
	for (size_t i = 0; i < k; i++)
		putchar(p[i] >= 0x20 && p[i] <= 0x7e ? p[i] : '.');
	if (k < n)
		fputs("...", stdout);
}

void cli_fput_json_bytes(FILE *f, const void *data, size_t n)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\')
			fprintf(f, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] > 0x7e)
			fprintf(f, "\\u%04x", p[i]);
		else
			putc(p[i], f);
	}
}

void cli_put_json_bytes(const void *data, size_t n) { cli_fput_json_bytes(stdout, data, n); }

void cli_on_stop_signals(void (*fn)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}
