/* SPDX-License-Identifier: MIT */
/*
 * cli.h: what the shmq tool's subcommands share: exit codes, the one-line error format, option
 * parsing around NAME, strict number parsing and opening a queue with a readable error.
 */
#ifndef SHMQ_CLI_H
#define SHMQ_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "shmq.h"
#include "shmq_inspect.h"

#define CLI_OK 0
#define CLI_FAIL 1  /* runtime failure: no such queue, queue full past the timeout, write error */
#define CLI_USAGE 2 /* bad command line */
/* recv: --timeout-ms passed before any message arrived (not an error: a script's "queue empty") */
#define CLI_NO_MESSAGE 4
#define CLI_DONE -1 /* nothing left to do (help was printed): exit 0 */

/* Long-only options use values from here up, so getopt's optopt tells them from short ones. */
#define CLI_OPT_BASE 256

/* The trust options of every command that opens a queue for use (send, recv, work, watchdog,
 * dlq): cli_parse handles them itself (owner.c), so a command only lists them in its table. */
#define CLI_OPT_TRUST_OWNER (CLI_OPT_BASE + 62)
#define CLI_OPT_TRUST_GROUP (CLI_OPT_BASE + 63)
#define CLI_TRUST_OPTIONS                                                                                    \
	{"trust-owner", required_argument, NULL, CLI_OPT_TRUST_OWNER},                                       \
	{                                                                                                    \
		"trust-group", required_argument, NULL, CLI_OPT_TRUST_GROUP                                  \
	}

/* What cli_parse found besides the options. */
struct cli_args {
	const char *name; /* the queue NAME */
	char **rest;	  /* arguments after NAME (and its options) */
	int nrest;
	int dashdash; /* "--" ended the options: rest is meant verbatim */
};

/* Called for each option; returns 0 or an exit code (after printing the error). */
typedef int (*cli_opt_fn)(const char *cmd, int opt, const char *arg, void *ctx);

/* Prints "shmq: <cmd>: <message>" on stderr, and "try 'shmq help'" after it when code is
 * CLI_USAGE. cmd may be NULL (no subcommand yet). Returns code. */
int cli_error(int code, const char *cmd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parses `cmd [options] NAME [options] [args...]` (argv[0] is the subcommand): options may come
 * before and after NAME; with '+' ordering, the first argument after NAME that is not an option
 * (or everything after "--") starts the rest. -h/--help print the subcommand's help. Returns 0,
 * CLI_DONE, or an exit code after printing the error. */
int cli_parse(const char *cmd, int argc, char **argv, const struct option *longopts, cli_opt_fn fn, void *ctx,
	      struct cli_args *out);

/* Parses `cmd [options]` for a subcommand that takes no NAME (and no other argument). Returns 0,
 * CLI_DONE, or an exit code after printing the error. */
int cli_parse_opts(const char *cmd, int argc, char **argv, const struct option *longopts, cli_opt_fn fn,
		   void *ctx);

/* Parses `cmd [options] [NAME...]`: options anywhere, every other argument (and all after "--") a
 * queue NAME, checked. *names (to free) holds *n of them, pointers into argv. Returns 0, CLI_DONE,
 * or an exit code after printing the error. */
int cli_parse_names(const char *cmd, int argc, char **argv, const struct option *longopts, cli_opt_fn fn,
		    void *ctx, char ***names, int *n);

/* Fails with "unexpected argument" unless the subcommand got nothing after NAME. */
int cli_no_rest(const char *cmd, const struct cli_args *a);

/* Parses all of s as an unsigned number in base 10 or 8: digits only (no sign, blank or prefix),
 * at most max. 0 or -EINVAL. */
int cli_parse_u64(const char *s, int base, uint64_t max, uint64_t *out);

/* Parses an option's value as a decimal number in [min, max]; on failure prints
 * "<opt> must be a whole number between <min> and <max>, got '<arg>'" and returns CLI_USAGE. */
int cli_opt_range(const char *cmd, const char *opt, const char *arg, uint64_t min, uint64_t max,
		  uint64_t *out);

/* Checks NAME against the rules of include/shmq.h, with a message saying which one it breaks. */
int cli_check_name(const char *cmd, const char *name);

/* The name of an enum shmq_dispatch as the tool spells it ("round-robin", "key-hash", ...), or
 * "unknown". */
const char *cli_dispatch_name(uint32_t dispatch);

/* The enum shmq_dispatch named s; 0 or -EINVAL. */
int cli_dispatch_parse(const char *s, uint32_t *out);

/* The policy names, comma-separated, for messages and help. */
#define CLI_DISPATCH_NAMES "round-robin, random, weighted, key-hash, least-loaded"

/* shmq_strerror(err), with the system's text added for errors the library has no text for. */
const char *cli_strerror(int err);

/* shmq_open with the trust options given (cli_trust) and a readable error; returns 0 or
 * CLI_FAIL. */
int cli_open(const char *cmd, const char *name, shmq_t **q);

/* owner.c: --trust-owner USER|UID and --trust-group GROUP|GID (opt is CLI_OPT_TRUST_*); 0 or an
 * exit code after printing the error. */
int cli_trust_opt(const char *cmd, int opt, const char *arg);
/* The options those gave (shmq_open_options_init's defaults when none). */
const struct shmq_open_options *cli_trust(void);
/* Says why shmq_open refused NAME with -EPERM: its owner and mode, and the option that would
 * allow it. Returns CLI_FAIL. */
int cli_refused(const char *cmd, const char *name);

/* A shared-memory object's owner and permission bits, as stat and list show them. */
struct cli_owner {
	int known; /* 0: it could not be stat'ed */
	uid_t uid;
	gid_t gid;
	mode_t mode; /* permission bits only (07777) */
};
struct stat;
void cli_owner_of(const struct stat *st, struct cli_owner *o);
/* Writes "alice" or, for a uid without a passwd entry, "61001"; returns 1 for a name, 0 for the
 * number. Likewise for groups. */
int cli_user_name(char *buf, size_t sz, uid_t uid);
int cli_group_name(char *buf, size_t sz, gid_t gid);
/* "alice (uid 1000), group shop (gid 1001)"; returns buf. */
const char *cli_owner_str(char *buf, size_t sz, const struct cli_owner *o);
/* "writable by every user", "writable by its group", or NULL for neither. */
const char *cli_mode_note(mode_t mode);

/* The first max bytes of a payload for a terminal, non-printables as '.', "..." if cut. */
void cli_put_preview(const void *data, size_t n, size_t max);

/* A payload as JSON string content (no quotes): printable ASCII as is, every other byte as
 * \u00XX (bytes, not UTF-8 decoding: a payload is bytes, and each stays visible and valid JSON). */
void cli_put_json_bytes(const void *data, size_t n);
/* cli_put_json_bytes to f */
void cli_fput_json_bytes(FILE *f, const void *data, size_t n);
/* NAME as shown to users: without the leading '/' the shm name may carry */
const char *cli_bare_name(const char *name);
/* the error for a keyed operation on a queue without a dedup table; what = "" or "--opt: " */
int cli_no_dedup(const char *cmd, const char *what, const char *name);

/* What a shared-memory object is, as the read-only tools (stat, list) see it (view.c). */
enum cli_obj_kind {
	CLI_OBJ_QUEUE,	     /* a shmq segment a view opened */
	CLI_OBJ_GONE,	     /* no such object (any more) */
	CLI_OBJ_FOREIGN,     /* not a shmq segment */
	CLI_OBJ_UNINIT,	     /* no magic yet: a queue being created (or a foreign object) */
	CLI_OBJ_CORRUPT,     /* shmq's magic, but the header breaks a rule */
	CLI_OBJ_UNSUPPORTED, /* another layout version */
	CLI_OBJ_UNREADABLE,  /* permission denied, or another error */
	CLI_OBJ_DIRECTORY,   /* a directory in /dev/shm */
	CLI_OBJ_SYMLINK,     /* a symbolic link in /dev/shm (shm_open never follows one) */
	CLI_OBJ_SPECIAL,     /* another file type: not a regular file */
};

/* Where shm_open's objects live, for what the tools read with the file system (lstat, list). */
#define CLI_SHM_DIR "/dev/shm"

#define CLI_WHY_MAX 320

struct cli_obj {
	int kind;		/* enum cli_obj_kind */
	uint64_t size;		/* bytes, when it could be stat'ed */
	char why[CLI_WHY_MAX];	/* for every kind but CLI_OBJ_QUEUE: one line saying what is wrong */
	struct cli_owner owner; /* when it could be stat'ed */
	shmq_view_t *view;	/* CLI_OBJ_QUEUE: the open view (the caller closes it) */
};

/* Opens a read-only view of NAME, or says what NAME is instead. wait: give a creator that has not
 * written the magic yet the library's grace (stat), or not (list: it must not stall on every
 * foreign object that starts with zeros). Returns o->kind. */
int cli_obj_probe(const char *name, int wait, struct cli_obj *o);

/* What the directory entry of NAME is, without following a link: CLI_OBJ_QUEUE for a regular file
 * (it may hold a queue: cli_obj_probe tells), CLI_OBJ_GONE for none, else CLI_OBJ_DIRECTORY,
 * CLI_OBJ_SYMLINK or CLI_OBJ_SPECIAL with o->why saying what it is and o->owner filled. */
int cli_obj_entry(const char *name, struct cli_obj *o);

/* Fails with one line ("'NAME' is a directory in /dev/shm, not a shmq queue") when NAME's entry is
 * not a regular file (cli_obj_entry), so that every subcommand says the same; 0 otherwise. */
int cli_check_entry(const char *cmd, const char *name);

/* cli_obj_probe for one queue, with a one-line error when NAME is not one; 0 or CLI_FAIL. Fills
 * *owner (when not NULL) with the object's owner and mode. */
int cli_view_open(const char *cmd, const char *name, shmq_view_t **v, struct cli_owner *owner);

/* Flushes stdout; on a write error prints it and returns CLI_FAIL. EPIPE (the reader left:
 * SIGPIPE is ignored) returns CLI_FAIL without a word, as SIGPIPE would have ended us. */
int cli_flush_stdout(const char *cmd);

/* Installs fn (or SIG_DFL) for SIGINT and SIGTERM, without SA_RESTART, so that the signal also
 * cuts a sleep short. */
void cli_on_stop_signals(void (*fn)(int));

/* main.c: prints the help of one subcommand, or all of it when cmd is NULL. */
void cli_help(FILE *f, const char *cmd);

/* The subcommands (cmd_queue.c, cmd_io.c, cmd_stat.c, cmd_watchdog.c, cmd_dlq.c, cmd_list.c,
 * cmd_peek.c, cmd_check.c, cmd_work.c): argv[0] is the subcommand's name. */
int cmd_create(int argc, char **argv);
int cmd_unlink(int argc, char **argv);
int cmd_purge(int argc, char **argv);
int cmd_set(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_recv(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_watchdog(int argc, char **argv);
int cmd_dlq(int argc, char **argv);
int cmd_peek(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_work(int argc, char **argv);
int cmd_exporter(int argc, char **argv); /* cmd_exporter.c */
/* cmd_bridge.c: execs shmq-bridge (the shmq tool does not link libnats) */
int cmd_bridge(int argc, char **argv);

/* stat_watch.c: `stat --watch`: refreshes every interval_ms until q, SIGINT or SIGTERM, or after
 * `refreshes` frames (0: no limit). */
int stat_watch(const char *cmd, const char *name, uint64_t interval_ms, uint64_t refreshes);

#endif
