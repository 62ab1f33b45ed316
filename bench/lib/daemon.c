/* SPDX-License-Identifier: MIT */
/*
 * daemon.c: starting, watching and stopping a peer's own server process (see daemon.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/daemon.h"

/* daemon_wait_ready() polls this often, this many times (10 s) */
#define DAEMON_POLL_US 10000
#define DAEMON_READY_POLLS 1000
/* daemon_stop() gives the server this many polls (2 s) to exit before SIGKILL */
#define DAEMON_STOP_POLLS 200

int daemon_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int port = -EADDRNOTAVAIL;
	if (!bind(fd, (struct sockaddr *)&a, sizeof(a)) && !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

int daemon_tcp_listening(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)port)};
	int ok = !connect(fd, (struct sockaddr *)&a, sizeof(a));
	close(fd);
	return ok;
}

int daemon_in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char dir[512], file[600];
	for (const char *p = path && *path ? path : "/usr/local/bin:/usr/bin:/bin"; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(dir, sizeof(dir), "%.*s", (int)n, p);
		snprintf(file, sizeof(file), "%s/%s", n ? dir : ".", prog); /* "" in PATH: "." */
		if (!access(file, X_OK))
			return 1;
		p += n + (p[n] == ':');
	}
	return 0;
}

static int daemon_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

void daemon_rmtree(const char *dir)
{
	/* depth first: a directory is empty by the time it is removed */
	nftw(dir, daemon_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int daemon_prepare(struct daemon *d, const char *tag)
{
	const char *tmp = getenv("TMPDIR");
	d->owner = getpid();
	snprintf(d->dir, sizeof(d->dir), "%s/shmqb-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
	if (!mkdtemp(d->dir)) {
		snprintf(d->why, sizeof(d->why), "mkdtemp %.100s: %s", d->dir, strerror(errno));
		d->dir[0] = '\0';
		return -EIO;
	}
	d->port = daemon_free_port();
	if (d->port < 0) {
		snprintf(d->why, sizeof(d->why), "no free port: %s", strerror(-d->port));
		return d->port;
	}
	return 0;
}

int daemon_spawn(struct daemon *d, const char *prog, const char *const argv[], unsigned flags)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(d->why, sizeof(d->why), "fork: %s", strerror(errno));
		return -EIO;
	}
	if (pid == 0) {
		/* dies with whoever started it, even if that process is killed before stop() */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		if (flags & DAEMON_QUIET)
			dup2(null, STDERR_FILENO);
		execvp(prog, (char *const *)argv);
		if (!(flags & DAEMON_QUIET))
			fprintf(stderr, "%s: exec %s: %s\n", d->peer, d->server, strerror(errno));
		_exit(127);
	}
	d->pid = pid;
	return 0;
}

int daemon_wait_ready(struct daemon *d, int (*ready)(int port), const char *awaited)
{
	for (int i = 0; i < DAEMON_READY_POLLS; i++) {
		int status;
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			snprintf(d->why, sizeof(d->why), "%s exited at start (status %d)", d->server, status);
			return -EIO;
		}
		if (ready(d->port))
			return 0;
		usleep(DAEMON_POLL_US);
	}
	snprintf(d->why, sizeof(d->why), "%s did not %s on port %d in 10 s", d->server, awaited, d->port);
	return -ETIMEDOUT;
}

void daemon_stop(struct daemon *d, int sig)
{
	if (d->owner != getpid())
		return;
	if (d->pid) {
		int status;
		if (sig)
			kill(d->pid, sig);
		for (int i = 0; i < DAEMON_STOP_POLLS && waitpid(d->pid, &status, WNOHANG) == 0; i++)
			usleep(DAEMON_POLL_US);
		if (waitpid(d->pid, &status, WNOHANG) == 0) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &status, 0);
		}
		d->pid = 0;
	}
	if (d->dir[0])
		daemon_rmtree(d->dir);
	d->dir[0] = '\0';
}
