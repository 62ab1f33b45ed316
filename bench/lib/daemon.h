/* SPDX-License-Identifier: MIT */
/*
 * daemon.h: a server process that a peer runs for itself (redis-server, nats-server).
 *
 * A peer with PEER_NEEDS_DAEMON starts its own server in start(), on a free port on 127.0.0.1 and
 * with its files in a scratch directory, so that a run never meets a server (or data) it did not
 * make, and stops it in stop(). What differs between servers (command line, how to tell it is
 * ready, how to ask it to go) stays in the peer; the process handling common to all is here.
 *
 * A typical start() is daemon_prepare(), daemon_spawn(), daemon_wait_ready(), and on any failure
 * the peer's own stop(), which ends in daemon_stop(). The functions set d->why when they fail, for
 * the peer's probe() to report. None of them is thread-safe; a peer keeps one struct daemon, in the
 * process that runs start() and stop().
 */
#ifndef SHMQ_BENCH_DAEMON_H
#define SHMQ_BENCH_DAEMON_H

#include <sys/types.h>

struct daemon {
	const char *server; /* e.g. "redis-server": names it in why and in messages */
	const char *peer;   /* e.g. "redis-streams": prefixes what the server's child prints */
	pid_t pid;	    /* the running server, 0 when none */
	pid_t owner;	    /* the process that started it: a forked child must not stop it */
	int port;
	char dir[256]; /* the scratch directory, "" when none */
	char why[160]; /* why the server could not start, "" while nothing failed */
};

/* daemon_spawn() flags */
enum {
	DAEMON_QUIET = 1u << 0, /* the server's stderr goes to /dev/null too (stdout always does) */
};

/* A port nobody listens on now on 127.0.0.1 (bind port 0, see what the kernel picked). The port
 * or -errno. Another process may take it before the server binds it; nothing here retries. */
int daemon_free_port(void);

/* Whether something accepts TCP connections on 127.0.0.1:port (a plain connect). */
int daemon_tcp_listening(int port);

/* Whether execvp() would find prog in $PATH (or a default list when $PATH is unset or empty). */
int daemon_in_path(const char *prog);

/* Removes dir and everything below it, without following links; errors are ignored (it is
 * scratch). */
void daemon_rmtree(const char *dir);

/* Makes this process the owner, creates d->dir as $TMPDIR/shmqb-<tag>-XXXXXX (/tmp without
 * $TMPDIR) and picks d->port. 0; -EIO when mkdtemp fails (d->dir is then ""); -errno of
 * daemon_free_port() (d->dir exists: daemon_stop() removes it). Sets d->why on failure. */
int daemon_prepare(struct daemon *d, const char *tag);

/* Forks and execs prog (searched in $PATH like execvp) with argv (NULL-terminated), and records
 * d->pid. The child dies with this process (PR_SET_PDEATHSIG, checked against a parent that died
 * before it was set), so a killed harness leaves no server behind; its stdin and stdout are
 * /dev/null. Does not wait for the server: see daemon_wait_ready(). 0, or -EIO when fork fails
 * (d->why set). */
int daemon_spawn(struct daemon *d, const char *prog, const char *const argv[], unsigned flags);

/* Polls ready(d->port) every 10 ms until it returns non-zero (0), the server exits (-EIO, d->pid
 * set to 0 as it is reaped) or 10 s pass (-ETIMEDOUT, the server still running). Sets d->why on
 * failure: "<server> did not <awaited> on port <port> in 10 s" on timeout. Blocks. */
int daemon_wait_ready(struct daemon *d, int (*ready)(int port), const char *awaited);

/* In the owner only (elsewhere it does nothing): sends sig to the server unless sig is 0 (the peer
 * has asked it to go its own way), SIGKILLs it if it has not exited 2 s later, reaps it, and
 * removes d->dir. Safe after any failure above, and more than once. Blocks up to 2 s. */
void daemon_stop(struct daemon *d, int sig);

#endif
