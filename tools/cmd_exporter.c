/* SPDX-License-Identifier: MIT */
/*
 * cmd_exporter.c: `shmq exporter [--listen HOST:PORT] [NAME...]`: an HTTP endpoint for
 * Prometheus. GET /metrics answers with the exposition `stat --prometheus` prints, of the queues
 * named (those that exist at the scrape) or of every queue in /dev/shm, from fresh read-only
 * snapshots at each scrape: a queue created after the start appears, an unlinked one goes. Any
 * other path is 404, any other method 405. libmicrohttpd serves it from one thread of its own;
 * the main thread waits for SIGINT or SIGTERM, then stops the server and exits 0.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "stat.h"

#define DEFAULT_LISTEN "127.0.0.1:9464"
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum {
	O_LISTEN = CLI_OPT_BASE,
};

static const struct option exporter_opts[] = {
	{"listen", required_argument, NULL, O_LISTEN},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct exporter {
	const char *listen;
	char **names; /* NULL: every queue */
	size_t n;
};

static int exporter_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	(void)cmd;
	(void)opt; /* --listen is the only option */
	((struct exporter *)ctx)->listen = arg;
	return 0;
}

/* A bound, listening TCP socket for HOST:PORT ("[::1]:9464" for IPv6, ":9464" for every
 * address); -1 after printing the one-line error (*code: the exit status). */
static int listen_on(const char *cmd, const char *spec, int *code)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	uint64_t port;
	*code = CLI_USAGE;
	if (!colon || cli_parse_u64(colon + 1, 10, 65535, &port) || (size_t)(colon - spec) >= sizeof(host)) {
		cli_error(CLI_USAGE, cmd, "--listen '%s': want HOST:PORT, e.g. %s", spec, DEFAULT_LISTEN);
		return -1;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - spec), spec);
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [::1] */
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
			*ai;
	int err = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
	if (err) {
		cli_error(CLI_USAGE, cmd, "--listen '%s': %s", spec, gai_strerror(err));
		return -1;
	}
	*code = CLI_FAIL;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol), one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 64)) {
		int e = errno;
		cli_error(CLI_FAIL, cmd, "cannot listen on %s: %s", spec,
			  e == EADDRINUSE ? "the port is in use" : strerror(e));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* "127.0.0.1:9464" of a bound socket (the port the kernel picked for port 0) */
static void bound_address(int fd, char *buf, size_t sz)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];
	if (getsockname(fd, (struct sockaddr *)&ss, &len) ||
	    getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(buf, sz, "?");
		return;
	}
	snprintf(buf, sz, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body, size_t len, int must_free)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		if (must_free)
			free(body);
		return MHD_NO;
	}
	enum MHD_Result r = MHD_YES;
	if (status == MHD_HTTP_OK)
		r = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TYPE);
	else if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		r = MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	if (r == MHD_YES)
		r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static char not_found[] = "not found: the metrics are at /metrics\n";
static char not_allowed[] = "method not allowed: GET /metrics\n";
static char failed[] = "cannot read the queues (see the exporter's standard error)\n";

/* libmicrohttpd's request handler: the exposition of fresh snapshots */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **req)
{
	static int started; /* *req marks the request's first call, which only sees its headers */
	const struct exporter *x = cls;
	(void)version;
	(void)upload;
	if (!*req) {
		*req = &started;
		return MHD_YES;
	}
	if (*upload_size) { /* a GET has no body: drop what comes */
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(url, "/metrics"))
		return reply(c, MHD_HTTP_NOT_FOUND, not_found, sizeof(not_found) - 1, 0);
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof(not_allowed) - 1, 0);

	struct stat_many m;
	char *body = NULL;
	size_t len = 0;
	if (stat_many_load("exporter", x->names, x->n, 0, &m))
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, failed, sizeof(failed) - 1, 0);
	FILE *f = open_memstream(&body, &len);
	if (f) {
		stat_print_prom(f, m.r, m.n);
		if (fclose(f)) {
			free(body);
			body = NULL;
		}
	}
	stat_many_free(&m);
	if (!body) {
		cli_error(CLI_FAIL, "exporter", "out of memory");
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, failed, sizeof(failed) - 1, 0);
	}
	return reply(c, MHD_HTTP_OK, body, len, 1);
}

int cmd_exporter(int argc, char **argv)
{
	const char *cmd = "exporter";
	struct exporter x = {.listen = DEFAULT_LISTEN};
	char addr[NI_MAXHOST + NI_MAXSERV + 4];
	sigset_t stop;
	char **names;
	int r, n, fd, sig;

	if ((r = cli_parse_names(cmd, argc, argv, exporter_opts, exporter_opt, &x, &names, &n)))
		return r;
	x.names = n ? names : NULL;
	x.n = (size_t)n;
	if ((fd = listen_on(cmd, x.listen, &r)) < 0)
		goto out;
	/* blocked before the server's thread starts, so that it inherits the mask and the signals
	 * wait for sigwait here */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request,
						&x, MHD_OPTION_LISTEN_SOCKET, fd,
						MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
	if (!d) {
		close(fd);
		r = cli_error(CLI_FAIL, cmd, "cannot start the HTTP server on %s", x.listen);
		goto out;
	}
	bound_address(fd, addr, sizeof(addr));
	printf("shmq exporter: listening on http://%s/metrics\n", addr);
	if ((r = cli_flush_stdout(cmd)) == 0) {
		while (sigwait(&stop, &sig))
			;
	}
	MHD_stop_daemon(d); /* closes the listening socket too */
out:
	free(names);
	return r;
}
