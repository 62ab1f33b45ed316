/* SPDX-License-Identifier: MIT */
/*
 * prom.h: a strict reader of the Prometheus text exposition format (version 0.0.4) for the
 * tests of `shmq stat --prometheus` and `shmq exporter`: every family has exactly one HELP and
 * then one TYPE line before its first sample, no family appears twice (so none is split), each
 * sample belongs to the family last introduced, label values use only the format's escapes, and
 * every sample is labelled queue="..." first.
 */
#ifndef SHMQ_TESTS_PROM_H
#define SHMQ_TESTS_PROM_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROM_MAX 8192 /* samples: an exposition of every queue in /dev/shm has many */
#define PROM_FAMILIES 256

struct prom {
	const char *keep; /* store only samples whose labels start with this (NULL: all); every line
			   * is checked all the same */
	int n, nfamilies;
	char families[PROM_FAMILIES][64];
	struct {
		char name[64], labels[512];
		double v;
	} s[PROM_MAX];
};

__attribute__((unused)) static int metric_char(char ch, int first)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
	       (!first && ch >= '0' && ch <= '9');
}

/* Parses text strictly (above), counters named *_total and only they. queue: the queue every
 * sample must be labelled with, or NULL for any. */
__attribute__((unused)) static void parse_prom(const char *text, const char *queue, struct prom *p)
{
	char help[64] = "", type[64] = "";
	char want_queue[400];
	snprintf(want_queue, sizeof(want_queue), "queue=\"%s%s", queue ? queue : "", queue ? "\"" : "");
	p->n = p->nfamilies = 0;
	if (!*text)
		return; /* no queue: an empty exposition */
	cr_assert(text[strlen(text) - 1] == '\n', "output does not end with a newline");
	for (const char *line = text; *line; line += strcspn(line, "\n") + 1) {
		char l[1024], name[64], t[16];
		int len = (int)strcspn(line, "\n");
		cr_assert(len > 0 && len < (int)sizeof(l), "empty or overlong line");
		snprintf(l, sizeof(l), "%.*s", len, line);
		if (!strncmp(l, "# HELP ", 7)) {
			cr_assert(sscanf(l + 7, "%63s", help) == 1 && strlen(l) > 8 + strlen(help),
				  "bad HELP: %s", l);
			for (int i = 0; i < p->nfamilies; i++)
				cr_assert(strcmp(p->families[i], help), "family %s appears twice", help);
			cr_assert(p->nfamilies < PROM_FAMILIES);
			snprintf(p->families[p->nfamilies++], 64, "%s", help);
			type[0] = '\0';
			continue;
		}
		if (!strncmp(l, "# TYPE ", 7)) {
			cr_assert(sscanf(l + 7, "%63s %15s", name, t) == 2 && !strcmp(name, help) && !type[0],
				  "TYPE without its HELP, or twice: %s", l);
			cr_assert(!strcmp(t, "gauge") || !strcmp(t, "counter"), "type %s", t);
			size_t nl = strlen(name);
			cr_expect(!strcmp(t, "counter") == (nl > 6 && !strcmp(name + nl - 6, "_total")),
				  "%s: counters and only counters end in _total", name);
			snprintf(type, sizeof(type), "%s", t);
			continue;
		}
		cr_assert(l[0] != '#', "unexpected comment: %s", l);
		int i = 0;
		while (metric_char(l[i], i == 0))
			i++;
		cr_assert(i > 0 && i < 64 && l[i] == '{', "bad sample name: %s", l);
		snprintf(name, sizeof(name), "%.*s", i, l);
		cr_assert(!strcmp(name, help) && type[0], "sample %s outside its family (HELP/TYPE %s)", name,
			  help);
		/* labels: k="v" pairs, values with \\, \" and \n escapes only */
		const char *lp = l + i + 1, *end = lp;
		while (*end != '}') {
			int k = 0;
			while (metric_char(end[k], k == 0))
				k++;
			cr_assert(k > 0 && end[k] == '=' && end[k + 1] == '"', "bad label in: %s", l);
			end += k + 2;
			while (*end && *end != '"') {
				if (*end == '\\')
					cr_assert(end[1] == '\\' || end[1] == '"' || end[1] == 'n',
						  "bad escape in a label value: %s", l);
				end += *end == '\\' ? 2 : 1;
			}
			cr_assert(*end == '"', "unterminated label value: %s", l);
			end++;
			cr_assert(*end == ',' || *end == '}', "bad label separator: %s", l);
			if (*end == ',')
				end++;
		}
		cr_assert(end[1] == ' ', "no space before the value: %s", l);
		char *vend;
		double v = strtod(end + 2, &vend);
		cr_assert(vend != end + 2 && !*vend, "bad value: %s", l);
		cr_expect(!strncmp(lp, want_queue, strlen(want_queue)), "no %s first: %s", want_queue, l);
		if (p->keep && strncmp(lp, p->keep, strlen(p->keep)))
			continue;
		cr_assert(p->n < PROM_MAX);
		snprintf(p->s[p->n].name, 64, "%s", name);
		snprintf(p->s[p->n].labels, sizeof(p->s[p->n].labels), "%.*s", (int)(end - lp), lp);
		p->s[p->n].v = v;
		p->n++;
	}
}

/* The value of the sample name{...} whose labels contain `labels`; fails if there is none. */
__attribute__((unused)) static double prom_value(const struct prom *p, const char *name, const char *labels)
{
	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->s[i].name, name) && (!labels || strstr(p->s[i].labels, labels)))
			return p->s[i].v;
	cr_expect_fail("no sample %s{%s}", name, labels ? labels : "");
	return -1;
}

/* How many samples name{...} have labels containing `labels` (NULL: all of name's). */
__attribute__((unused)) static int prom_count(const struct prom *p, const char *name, const char *labels)
{
	int n = 0;
	for (int i = 0; i < p->n; i++)
		n += !strcmp(p->s[i].name, name) && (!labels || strstr(p->s[i].labels, labels));
	return n;
}

#endif
