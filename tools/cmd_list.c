/* SPDX-License-Identifier: MIT */
/*
 * cmd_list.c: `shmq list [--json]`: every object in /dev/shm, in name order: for a queue its
 * size, depths and live participants (a read-only snapshot, as `stat` takes); for anything else
 * what it is: not a shmq segment, being created, corrupted, another layout, unreadable. An
 * object that vanishes between the directory read and its probe is left out.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "stat.h"

#define SHM_DIR CLI_SHM_DIR

enum {
	O_JSON = CLI_OPT_BASE,
};

static const struct option list_opts[] = {
	{"json", no_argument, NULL, O_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int list_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	(void)cmd;
	(void)opt;
	(void)arg;
	*(int *)ctx = 1; /* --json is the only option */
	return 0;
}

/* One object: what the probe found, and for a queue its snapshot. */
struct entry {
	char *name;
	struct cli_obj obj;
	struct stat_report rep;
	int loaded; /* rep holds a snapshot */
};

static const char *const kind_names[] = {
	[CLI_OBJ_QUEUE] = "queue",	     [CLI_OBJ_GONE] = "gone",
	[CLI_OBJ_FOREIGN] = "foreign",	     [CLI_OBJ_UNINIT] = "uninitialised",
	[CLI_OBJ_CORRUPT] = "corrupted",     [CLI_OBJ_UNSUPPORTED] = "unsupported",
	[CLI_OBJ_UNREADABLE] = "unreadable", [CLI_OBJ_DIRECTORY] = "directory",
	[CLI_OBJ_SYMLINK] = "symlink",	     [CLI_OBJ_SPECIAL] = "special",
};

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

/* The names of the entries of SHM_DIR but the hidden ones, sorted; *n of them. -errno on failure. */
static int read_dir(struct entry **out, size_t *n)
{
	DIR *d = opendir(SHM_DIR);
	if (!d)
		return -errno;
	struct entry *e = NULL;
	size_t len = 0, cap = 0;
	int err = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		/* hidden entries: . and .., and the descriptors' sockets of shmq_fd (.shmq-fd-*) */
		if (de->d_name[0] == '.')
			continue;
		if (len == cap) {
			size_t ncap = cap ? 2 * cap : 16;
			struct entry *ne = realloc(e, ncap * sizeof(*e));
			if (!ne) {
				err = -ENOMEM;
				break;
			}
			e = ne;
			cap = ncap;
		}
		memset(&e[len], 0, sizeof(e[len]));
		if (!(e[len].name = strdup(de->d_name))) {
			err = -ENOMEM;
			break;
		}
		len++;
	}
	closedir(d);
	if (len)
		qsort(e, len, sizeof(*e), by_name);
	*out = e;
	*n = len;
	return err;
}

/* Probes an entry; a queue gets its snapshot (and its view is closed again). */
static void probe(struct entry *e)
{
	/* no wait for a creator: a foreign object starting with zeros must not stall the listing */
	int kind = cli_obj_probe(e->name, 0, &e->obj);
	if (!e->obj.owner.known) { /* unreadable to us: its owner (who may have squatted the name)
				    * is still in the directory */
		char path[sizeof(SHM_DIR) + NAME_MAX + 1];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", SHM_DIR, e->name);
		if (!stat(path, &st)) {
			cli_owner_of(&st, &e->obj.owner);
			e->obj.size = (uint64_t)st.st_size;
		}
	}
	if (kind != CLI_OBJ_QUEUE)
		return;
	int err = stat_report_load(e->obj.view, e->name, &e->rep);
	shmq_view_close(e->obj.view);
	e->obj.view = NULL;
	if (err) {
		e->obj.kind = CLI_OBJ_UNREADABLE;
		snprintf(e->obj.why, sizeof(e->obj.why), "%s", cli_strerror(err));
		return;
	}
	e->rep.owner = e->obj.owner;
	e->loaded = 1;
}

/* OWNER's column: the user's name, or the uid without one; "?" when the object could not be
 * stat'ed. */
static void owner_cell(const struct entry *e, char *buf, size_t sz)
{
	if (e->obj.owner.known)
		cli_user_name(buf, sz, e->obj.owner.uid);
	else
		snprintf(buf, sz, "?");
}

static void print_text(const struct entry *e, size_t n)
{
	int w = 4, wo = 5;
	char owner[64];
	for (size_t i = 0; i < n; i++) {
		if (e[i].obj.kind == CLI_OBJ_GONE)
			continue;
		if ((int)strlen(e[i].name) > w)
			w = (int)strlen(e[i].name);
		owner_cell(&e[i], owner, sizeof(owner));
		if ((int)strlen(owner) > wo)
			wo = (int)strlen(owner);
	}
	printf("%-*s %10s %-*s %4s %8s %9s %8s %8s %6s\n", w, "NAME", "SIZE", wo, "OWNER", "MODE", "READY",
	       "INFLIGHT", "DELAYED", "DEAD", "ALIVE");
	for (size_t i = 0; i < n; i++) {
		char size[32], mode[8] = "?";
		if (e[i].obj.kind == CLI_OBJ_GONE)
			continue;
		stat_human_bytes(size, sizeof(size), e[i].obj.size);
		owner_cell(&e[i], owner, sizeof(owner));
		if (e[i].obj.owner.known)
			snprintf(mode, sizeof(mode), "%04o", (unsigned)e[i].obj.owner.mode);
		printf("%-*s %10s %-*s %4s ", w, e[i].name, size, wo, owner, mode);
		if (!e[i].loaded) {
			if (e[i].obj.kind == CLI_OBJ_CORRUPT)
				printf("corrupted: %s\n", e[i].obj.why);
			else if (e[i].obj.kind == CLI_OBJ_UNSUPPORTED)
				printf("other layout: %s\n", e[i].obj.why);
			else if (e[i].obj.kind == CLI_OBJ_UNREADABLE)
				printf("unreadable: %s\n", e[i].obj.why);
			else
				printf("%s\n", e[i].obj.why);
			continue;
		}
		const struct shmq_stats *st = &e[i].rep.s.stats;
		printf("%8llu %9llu %8llu %8llu %6u\n", (unsigned long long)st->ready,
		       (unsigned long long)st->inflight, (unsigned long long)st->delayed,
		       (unsigned long long)st->dead, st->participants);
	}
}

static json_t *json_entry(const struct entry *e)
{
	json_t *o = json_pack("{s:s, s:I, s:s}", "name", e->name, "size_bytes", (json_int_t)e->obj.size,
			      "kind", kind_names[e->obj.kind]);
	if (!o)
		return NULL;
	/* owner: null when the object could not be stat'ed */
	int bad = json_object_set_new(o, "owner", stat_json_owner(&e->obj.owner));
	if (e->loaded)
		bad = bad || json_object_set_new(o, "depths", stat_json_depths(&e->rep.s.stats)) ||
		      json_object_set_new(o, "participants_alive", json_integer(e->rep.s.stats.participants));
	else
		bad = bad || json_object_set_new(o, "reason", json_string(e->obj.why));
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int print_json(const struct entry *e, size_t n)
{
	json_t *list = json_array();
	json_t *root =
		json_pack("{s:s, s:s, s:o}", "schema", "shmq.list/1", "directory", SHM_DIR, "objects", list);
	int err = root ? 0 : -ENOMEM;
	for (size_t i = 0; !err && i < n; i++)
		if (e[i].obj.kind != CLI_OBJ_GONE && json_array_append_new(list, json_entry(&e[i])))
			err = -ENOMEM;
	if (!err) {
		err = json_dumpf(root, stdout, JSON_INDENT(2)) ? -EIO : 0;
		putchar('\n');
	}
	json_decref(root);
	return err;
}

int cmd_list(int argc, char **argv)
{
	const char *cmd = "list";
	struct entry *e = NULL;
	size_t n = 0;
	int json = 0, r;

	if ((r = cli_parse_opts(cmd, argc, argv, list_opts, list_opt, &json)))
		return r;
	if ((r = read_dir(&e, &n))) {
		r = cli_error(CLI_FAIL, cmd, "cannot read %s: %s", SHM_DIR, strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		probe(&e[i]);
	if (json) {
		if (print_json(e, n) == -ENOMEM) {
			r = cli_error(CLI_FAIL, cmd, "out of memory building the JSON");
			goto out;
		}
	} else {
		print_text(e, n);
	}
	r = cli_flush_stdout(cmd);
out:
	for (size_t i = 0; i < n; i++) {
		stat_report_free(&e[i].rep);
		free(e[i].name);
	}
	free(e);
	return r;
}
