/* SPDX-License-Identifier: MIT */
/*
 * owner.c: users and groups for the tool: the --trust-owner and --trust-group options of the
 * commands that open a queue, owners and modes as users read them, and the one-line refusal of a
 * queue that shmq_open would not trust (naming its owner, its mode and the option that allows it).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* the one tool run's trust: set by the options, used by every cli_open of that run */
static struct shmq_open_options trust;
static int trust_ready;

const struct shmq_open_options *cli_trust(void)
{
	if (!trust_ready) {
		shmq_open_options_init(&trust);
		trust_ready = 1;
	}
	return &trust;
}

/* A user or group option's value: a name the system knows, or a number (an id need not have a
 * name). 0 or -EINVAL. */
static int parse_id(const char *arg, int user, uint32_t *out)
{
	uint64_t v;
	if (!cli_parse_u64(arg, 10, UINT32_MAX - 1, &v)) { /* (uint32_t)-1 means "nobody" */
		*out = (uint32_t)v;
		return 0;
	}
	if (user) {
		struct passwd *pw = getpwnam(arg);
		if (pw)
			*out = pw->pw_uid;
		return pw ? 0 : -EINVAL;
	}
	struct group *gr = getgrnam(arg);
	if (gr)
		*out = gr->gr_gid;
	return gr ? 0 : -EINVAL;
}

int cli_trust_opt(const char *cmd, int opt, const char *arg)
{
	int user = opt == CLI_OPT_TRUST_OWNER;
	const char *name = user ? "--trust-owner" : "--trust-group";
	const struct shmq_open_options *t = cli_trust(); /* initialised before we set a field of it */
	uint32_t id;
	/* commands that parse in several rounds (watchdog, dlq) meet it again in a later round */
	if (user ? t->trust_uid != (uid_t)-1 : t->trust_gid != (gid_t)-1)
		return cli_error(CLI_USAGE, cmd, "option '%s' given twice", name);
	if (parse_id(arg, user, &id))
		return cli_error(CLI_USAGE, cmd, "%s: no %s '%s' (give a %s name or a numeric %s)", name,
				 user ? "user" : "group", arg, user ? "user" : "group", user ? "uid" : "gid");
	if (user)
		trust.trust_uid = (uid_t)id;
	else
		trust.trust_gid = (gid_t)id;
	return 0;
}

/* name, or the number when the id has none; 1 for a name, 0 for the number */
static int id_name(char *buf, size_t sz, unsigned id, const char *name)
{
	if (name)
		snprintf(buf, sz, "%s", name);
	else
		snprintf(buf, sz, "%u", id);
	return name != NULL;
}

int cli_user_name(char *buf, size_t sz, uid_t uid)
{
	struct passwd *pw = getpwuid(uid);
	return id_name(buf, sz, uid, pw ? pw->pw_name : NULL);
}

int cli_group_name(char *buf, size_t sz, gid_t gid)
{
	struct group *gr = getgrgid(gid);
	return id_name(buf, sz, gid, gr ? gr->gr_name : NULL);
}

const char *cli_owner_str(char *buf, size_t sz, const struct cli_owner *o)
{
	char user[64], group[64], u[100], g[100];
	/* an id without a name is shown once, as the number */
	if (cli_user_name(user, sizeof(user), o->uid))
		snprintf(u, sizeof(u), "%s (uid %u)", user, (unsigned)o->uid);
	else
		snprintf(u, sizeof(u), "uid %u", (unsigned)o->uid);
	if (cli_group_name(group, sizeof(group), o->gid))
		snprintf(g, sizeof(g), "group %s (gid %u)", group, (unsigned)o->gid);
	else
		snprintf(g, sizeof(g), "gid %u", (unsigned)o->gid);
	snprintf(buf, sz, "%s, %s", u, g);
	return buf;
}

const char *cli_mode_note(mode_t mode)
{
	if (mode & S_IWOTH)
		return "writable by every user";
	if (mode & S_IWGRP)
		return "writable by its group";
	return NULL;
}

void cli_owner_of(const struct stat *st, struct cli_owner *o)
{
	o->known = 1;
	o->uid = st->st_uid;
	o->gid = st->st_gid;
	o->mode = st->st_mode & 07777;
}

int cli_refused(const char *cmd, const char *name)
{
	struct stat st;
	struct cli_owner o;
	char who[200], user[64], group[64];
	int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	int ok = fd >= 0 && fstat(fd, &st) == 0;
	if (fd >= 0)
		close(fd);
	if (ok)
		cli_owner_of(&st, &o);
	/* gone or changed since the open, or an EPERM that was not the trust check's (a security
	 * module's, say): say what the open said */
	if (!ok || (o.uid == geteuid() && !(o.mode & S_IWOTH)))
		return cli_error(CLI_FAIL, cmd, "cannot open queue '%s': %s", name, cli_strerror(-EPERM));
	cli_owner_str(who, sizeof(who), &o);
	cli_user_name(user, sizeof(user), o.uid);
	cli_group_name(group, sizeof(group), o.gid);
	if (o.uid == geteuid())
		return cli_error(
			CLI_FAIL, cmd,
			"refusing queue '%s': it is yours but writable by every user (mode %04o); pass "
			"--trust-owner %s if you meant it to be",
			name, (unsigned)o.mode, user);
	return cli_error(CLI_FAIL, cmd,
			 "refusing queue '%s': it belongs to another user, %s, mode %04o; pass --trust-owner "
			 "%s (or --trust-group %s) if you trust them",
			 name, who, (unsigned)o.mode, user, group);
}
