/* SPDX-License-Identifier: MIT */
/*
 * report.c: table cells, JSON values and running gnuplot (see report.h).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/report.h"

void fmt_spread(char *buf, size_t n, struct spread s, int prec)
{
	if (!isfinite(s.med)) {
		snprintf(buf, n, "-");
		return;
	}
	char a[32], b[32], c[32];
	snprintf(a, sizeof(a), "%.*f", prec, s.med);
	snprintf(b, sizeof(b), "%.*f", prec, s.min);
	snprintf(c, sizeof(c), "%.*f", prec, s.max);
	if (!strcmp(a, b) && !strcmp(a, c))
		snprintf(buf, n, "%s", a);
	else
		snprintf(buf, n, "%s [%s-%s]", a, b, c);
}

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", (unsigned char)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

void json_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.6g", v);
	else
		fputs("null", f);
}

void json_spread(FILE *f, struct spread s)
{
	fputs("{\"median\": ", f);
	json_num(f, s.med);
	fputs(", \"min\": ", f);
	json_num(f, s.min);
	fputs(", \"max\": ", f);
	json_num(f, s.max);
	fputc('}', f);
}

int report_have_gnuplot(void)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	char dir[4096];
	while (*path) {
		size_t k = strcspn(path, ":");
		char file[4200];
		snprintf(dir, sizeof(dir), "%.*s", (int)k, path);
		snprintf(file, sizeof(file), "%s/gnuplot", *dir ? dir : ".");
		if (!access(file, X_OK))
			return 1;
		path += k + (path[k] == ':');
	}
	return 0;
}

int report_gnuplot(const char *script)
{
	fflush(NULL);
	pid_t p = fork();
	if (p < 0)
		return -errno;
	if (p == 0) {
		execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	int st;
	while (waitpid(p, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}
