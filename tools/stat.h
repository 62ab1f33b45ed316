/* SPDX-License-Identifier: MIT */
/*
 * stat.h: what `shmq stat` and `shmq list` share: one snapshot of a queue through a read-only
 * view, and the tables of its figures, so that the text, JSON and Prometheus formats name each
 * figure in one place.
 */
#ifndef SHMQ_STAT_H
#define SHMQ_STAT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cli.h"
#include "shmq_inspect.h"

/* A snapshot and the participant records it saw. */
struct stat_report {
	const char *name; /* the queue's name without its leading '/' */
	struct shmq_snapshot s;
	struct shmq_participant_info *parts;
	unsigned nparts;
	struct cli_owner owner; /* the segment's owner and mode (stat_report_load: unknown) */
};

/* Takes a snapshot through v. 0, or -ENOMEM / -EINVAL. */
int stat_report_load(shmq_view_t *v, const char *name, struct stat_report *r);
void stat_report_free(struct stat_report *r);

/* One uint64_t figure of struct shmq_stats, under its name in each format. */
struct stat_field {
	const char *key;    /* JSON key */
	const char *label;  /* text label */
	const char *metric; /* Prometheus metric: fields of one family are adjacent */
	const char *mlabel; /* its distinguishing label pair, or NULL */
	const char *help;   /* Prometheus HELP text (read from the family's first field) */
	size_t off;	    /* offsetof(struct shmq_stats, the field) */
};

extern const struct stat_field stat_depths[]; /* slots by state: ready ... free */
extern const struct stat_field stat_totals[]; /* counters summed over the participant records */
extern const size_t stat_ndepths, stat_ntotals;

static inline uint64_t stat_value(const struct shmq_stats *st, const struct stat_field *f)
{
	return *(const uint64_t *)((const char *)st + f->off);
}

/* ms from `then` to `now` on the snapshot's clock, 0 if `then` is later */
static inline uint64_t stat_ago_ms(uint64_t now, uint64_t then) { return now > then ? now - then : 0; }

/* 268288 -> "262.0 KiB" */
void stat_human_bytes(char *buf, size_t sz, uint64_t bytes);

/* The formats (stat_text.c, stat_json.c, stat_prom.c) write to stdout. */
void stat_print_text(const struct stat_report *r);
int stat_print_json(const struct stat_report *r); /* 0 or -ENOMEM */
/* create --json: {schema shmq.create/1, queue, segment_bytes, config (as stat's)}; 0 or -ENOMEM */
int stat_print_created_json(const struct stat_report *r);
/* The reports r[0..n-1] in one exposition: each family once, every queue's samples in it. */
void stat_print_prom(FILE *f, const struct stat_report *r, size_t n);

/* Snapshots of several queues (stat_many.c). */
struct stat_many {
	struct stat_report *r; /* n of them, in the order named, or by name */
	size_t n, cap;
	char **names; /* what the reports' names point into */
};

/* Loads the queues names[0..n-1], or with names NULL every queue in /dev/shm in name order
 * (other objects left out). strict: a NAME that is not a queue we can read fails the load with
 * its one-line error; otherwise it is left out. 0, or an exit code after printing the error. */
int stat_many_load(const char *cmd, char *const *names, size_t n, int strict, struct stat_many *m);
void stat_many_free(struct stat_many *m);

/* JSON objects that `list --json` shares with `stat --json` (a json_t *, as void * so that only
 * the JSON files include jansson.h); NULL when out of memory. */
void *stat_json_depths(const struct shmq_stats *st);
/* {uid, user, gid, group, mode}, or JSON null when the owner is not known */
void *stat_json_owner(const struct cli_owner *o);

#endif
