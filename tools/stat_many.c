/* SPDX-License-Identifier: MIT */
/*
 * stat_many.c: snapshots of several queues for one exposition (`stat --prometheus`, `exporter`):
 * the queues named, or every queue in /dev/shm. Objects that are not queues are left out of a
 * listing of /dev/shm; a queue named that cannot be read is an error or left out, as asked.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "stat.h"

#define SHM_DIR "/dev/shm"

static int regular(const struct dirent *de)
{
	return de->d_name[0] != '.' && (de->d_type == DT_REG || de->d_type == DT_UNKNOWN);
}

/* Adds NAME's snapshot to m when NAME is a queue we can read. strict: otherwise print why and
 * return CLI_FAIL; else leave it out. named: give a creator that has not written the magic yet
 * the library's grace; an object met in a listing gets none (as in `list`: a foreign object
 * that starts with zeros must not stall every scrape). */
static int add(const char *cmd, const char *name, int strict, int named, struct stat_many *m)
{
	struct stat_report *r = &m->r[m->n];
	struct cli_owner owner;
	shmq_view_t *v = NULL;
	struct cli_obj o;
	int err;
	if (strict) {
		if ((err = cli_view_open(cmd, name, &v, &owner)))
			return err;
	} else {
		if (cli_obj_probe(name, named, &o) != CLI_OBJ_QUEUE)
			return 0;
		v = o.view;
		owner = o.owner;
	}
	err = stat_report_load(v, name, r);
	shmq_view_close(v);
	if (err)
		return strict ? cli_error(CLI_FAIL, cmd, "cannot read the statistics of '%s': %s", name,
					  cli_strerror(err))
			      : 0;
	r->owner = owner;
	m->n++;
	return 0;
}

int stat_many_load(const char *cmd, char *const *names, size_t n, int strict, struct stat_many *m)
{
	struct dirent **ents = NULL;
	int nents = 0, r = 0;
	memset(m, 0, sizeof(*m));
	if (!names) {
		if ((nents = scandir(SHM_DIR, &ents, regular, alphasort)) < 0)
			return cli_error(CLI_FAIL, cmd, "cannot list %s: %s", SHM_DIR, strerror(errno));
		n = (size_t)nents;
	}
	/* the names outlive the scan: each report points at its own copy */
	m->cap = n;
	m->names = calloc(n ? n : 1, sizeof(*m->names));
	m->r = calloc(n ? n : 1, sizeof(*m->r));
	if (!m->names || !m->r) {
		r = cli_error(CLI_FAIL, cmd, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const char *name = names ? names[i] : ents[i]->d_name;
		if (!(m->names[m->n] = strdup(name))) {
			r = cli_error(CLI_FAIL, cmd, "out of memory");
			goto out;
		}
		size_t before = m->n;
		if ((r = add(cmd, m->names[m->n], strict && names, names != NULL, m)))
			goto out;
		if (m->n == before) { /* left out: its name slot is reused */
			free(m->names[m->n]);
			m->names[m->n] = NULL;
		}
	}
out:
	for (int i = 0; i < nents; i++)
		free(ents[i]);
	free(ents);
	if (r)
		stat_many_free(m);
	return r;
}

void stat_many_free(struct stat_many *m)
{
	for (size_t i = 0; i < m->n; i++)
		stat_report_free(&m->r[i]);
	if (m->names)
		for (size_t i = 0; i < m->cap; i++)
			free(m->names[i]);
	free(m->names);
	free(m->r);
	memset(m, 0, sizeof(*m));
}
