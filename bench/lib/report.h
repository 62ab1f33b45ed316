/* SPDX-License-Identifier: MIT */
/*
 * report.h: small output helpers shared by the benches: table cells, JSON values, gnuplot.
 */
#ifndef SHMQ_BENCH_REPORT_H
#define SHMQ_BENCH_REPORT_H

#include <stddef.h>
#include <stdio.h>

#include "lib/stats.h"

/* "med [min-max]" with prec decimals, or "med" alone when all three print the same */
void fmt_spread(char *buf, size_t n, struct spread s, int prec);

/* a JSON string literal, escaped */
void json_str(FILE *f, const char *s);
/* a JSON number, or null for NaN / infinity */
void json_num(FILE *f, double v);
/* {"median": .., "min": .., "max": ..} */
void json_spread(FILE *f, struct spread s);

/* Is gnuplot on PATH? */
int report_have_gnuplot(void);
/* Runs `gnuplot SCRIPT` (output on stderr is kept). 0, or -errno / the exit status as -ECHILD. */
int report_gnuplot(const char *script);

#endif
