/* SPDX-License-Identifier: MIT */
/*
 * view.c: opening a queue read-only for the inspection commands, and saying in one line what a
 * shared-memory object is when it is not a queue they can read: foreign, being created,
 * corrupted (the fsck's first finding), another layout version, or unreadable.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void first_finding(void *ctx, int severity, const char *what)
{
	char *why = ctx;
	if (severity == SHMQ_CHECK_ERROR && !why[0])
		snprintf(why, CLI_WHY_MAX, "%s", what);
}

/* Why the library refused a segment that carries shmq's magic: the check's first error. */
static int refused(const char *name, int err, struct cli_obj *o)
{
	o->why[0] = '\0';
	shmq_check_name(name, first_finding, o->why);
	if (!o->why[0]) /* changed since the open: say what the open said */
		snprintf(o->why, sizeof(o->why), "%s", cli_strerror(err));
	return o->kind = err == -EPROTONOSUPPORT ? CLI_OBJ_UNSUPPORTED : CLI_OBJ_CORRUPT;
}

static int say(struct cli_obj *o, int kind, const char *why)
{
	snprintf(o->why, sizeof(o->why), "%s", why);
	return o->kind = kind;
}

int cli_obj_entry(const char *name, struct cli_obj *o)
{
	char path[sizeof(CLI_SHM_DIR) + NAME_MAX + 1];
	struct stat st;
	memset(o, 0, sizeof(*o));
	snprintf(path, sizeof(path), "%s/%s", CLI_SHM_DIR, cli_bare_name(name));
	if (lstat(path, &st) < 0) /* none, or unreadable: shm_open says which */
		return o->kind = errno == ENOENT ? CLI_OBJ_GONE : CLI_OBJ_QUEUE;
	cli_owner_of(&st, &o->owner);
	o->size = (uint64_t)st.st_size;
	if (S_ISREG(st.st_mode))
		return o->kind = CLI_OBJ_QUEUE;
	if (S_ISDIR(st.st_mode))
		return say(o, CLI_OBJ_DIRECTORY, "a directory, not a shmq segment");
	if (S_ISLNK(st.st_mode))
		return say(o, CLI_OBJ_SYMLINK,
			   "a symbolic link, not a shmq segment (shmq never follows one)");
	return say(o, CLI_OBJ_SPECIAL, "not a regular file, so not a shmq segment");
}

int cli_check_entry(const char *cmd, const char *name)
{
	static const char *const what[] = {[CLI_OBJ_DIRECTORY] = "a directory",
					   [CLI_OBJ_SYMLINK] = "a symbolic link",
					   [CLI_OBJ_SPECIAL] = "not a regular file"};
	struct cli_obj o;
	int kind = cli_obj_entry(name, &o);
	if (kind == CLI_OBJ_QUEUE || kind == CLI_OBJ_GONE)
		return 0;
	return cli_error(CLI_FAIL, cmd, "'%s' is %s in %s, not a shmq queue%s", cli_bare_name(name),
			 what[kind], CLI_SHM_DIR,
			 kind == CLI_OBJ_SYMLINK ? " (shmq never follows a link there)" : "");
}

int cli_obj_probe(const char *name, int wait, struct cli_obj *o)
{
	uint64_t magic = 0;
	struct stat st;
	int entry = cli_obj_entry(name, o);
	if (entry != CLI_OBJ_QUEUE && entry != CLI_OBJ_GONE)
		return entry;
	memset(o, 0, sizeof(*o));
	/* the magic first, through our own descriptor: a foreign object is told apart at once,
	 * where the library would wait for a creator to write it */
	int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return errno == ENOENT ? say(o, CLI_OBJ_GONE, "no such object")
				       : say(o, CLI_OBJ_UNREADABLE, strerror(errno));
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return say(o, CLI_OBJ_UNREADABLE, strerror(e));
	}
	o->size = (uint64_t)st.st_size;
	cli_owner_of(&st, &o->owner);
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return say(o, CLI_OBJ_FOREIGN, "not a shmq segment (not a regular file)");
	}
	ssize_t n = pread(fd, &magic, sizeof(magic), 0);
	close(fd);
	if (n == (ssize_t)sizeof(magic) && magic && magic != SHMQ_SEGMENT_MAGIC)
		return say(o, CLI_OBJ_FOREIGN, "not a shmq segment");
	if (!magic && !wait)
		return say(o, CLI_OBJ_UNINIT,
			   "not initialised (a queue being created, or not a shmq segment)");

	int err = shmq_view_open(name, &o->view);
	switch (err) {
	case 0:
		return o->kind = CLI_OBJ_QUEUE;
	case -ENOENT:
		return say(o, CLI_OBJ_GONE, "no such object");
	case -EAGAIN:
		return say(o, CLI_OBJ_UNINIT,
			   "not initialised (its creator is still at it, or died before it finished)");
	case -EPROTO:
		if (magic != SHMQ_SEGMENT_MAGIC) /* too short for a header, or zeros that stayed */
			return say(o, CLI_OBJ_FOREIGN, "not a shmq segment");
		return refused(name, err, o);
	case -EPROTONOSUPPORT:
		return refused(name, err, o);
	default:
		return say(o, CLI_OBJ_UNREADABLE, cli_strerror(err));
	}
}

int cli_view_open(const char *cmd, const char *name, shmq_view_t **v, struct cli_owner *owner)
{
	struct cli_obj o;
	*v = NULL;
	switch (cli_obj_probe(name, 1, &o)) {
	case CLI_OBJ_QUEUE:
		*v = o.view;
		if (owner)
			*owner = o.owner;
		return 0;
	case CLI_OBJ_GONE:
		return cli_error(CLI_FAIL, cmd, "no such queue '%s'", name);
	case CLI_OBJ_FOREIGN:
		return cli_error(CLI_FAIL, cmd, "'%s' is not a shmq queue (not a shmq segment)", name);
	case CLI_OBJ_UNINIT:
		return cli_error(CLI_FAIL, cmd, "queue '%s' is %s", name, o.why);
	case CLI_OBJ_CORRUPT:
		return cli_error(CLI_FAIL, cmd, "queue '%s' is corrupted: %s", name, o.why);
	case CLI_OBJ_UNSUPPORTED:
		return cli_error(CLI_FAIL, cmd, "queue '%s' has another layout: %s", name, o.why);
	default:
		return cli_error(CLI_FAIL, cmd, "cannot read queue '%s': %s", name, o.why);
	}
}
