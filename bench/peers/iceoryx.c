/* SPDX-License-Identifier: MIT */
/*
 * iceoryx.c: the iceoryx peer (Eclipse iceoryx 2.0, C binding). A channel is one publisher and one
 * subscriber on service "shmq-bench", instance <tag>, event "data"; a message is a shared-memory
 * chunk loaned from RouDi's mempools, copied into, published, taken, copied out and released.
 *
 * Owns the iox-roudi daemon for the run (start/stop), one iceoryx runtime per attaching process,
 * and a watchdog thread per process that bounds the calls iceoryx itself may block in forever.
 *
 * Delivery: the publisher waits for the subscriber (WAIT_FOR_CONSUMER + BLOCK_PRODUCER), so nothing
 * is dropped while both live. iceoryx is publish/subscribe, not a work queue: no acks, and the
 * chunks queued for a subscriber that dies are lost with it; a send with no subscriber waits for
 * one (up to IOX_WAIT_MS) instead of publishing into the void.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h> /* shm_unlink */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "peers/peer.h"

#if __has_include(<iceoryx_binding_c/api.h>)
#define HAVE_ICEORYX 1
#include <iceoryx_binding_c/config.h>
#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>
#elif __has_include(<iceoryx/v2.0.3/iceoryx_binding_c/enums.h>)
/*
 * Debian's 2.0.3 headers include each other as "iceoryx_binding_c/...", which resolves only with
 * -I/usr/include/iceoryx/v2.0.3. Without it we include the self-contained ones and declare the rest
 * of what we call as the 2.0.3 headers do (the path pins the version, so the layouts match).
 */
#define HAVE_ICEORYX 1
#include <iceoryx/v2.0.3/iceoryx_binding_c/config.h>
#include <iceoryx/v2.0.3/iceoryx_binding_c/enums.h>
#include <iceoryx/v2.0.3/iceoryx_binding_c/log.h>
#include <iceoryx/v2.0.3/iceoryx_binding_c/runtime.h>
#include <iceoryx/v2.0.3/iceoryx_binding_c/types.h>

typedef struct cpp2c_Publisher *iox_pub_t;
typedef struct cpp2c_Subscriber *iox_sub_t;
typedef struct cpp2c_WaitSet *iox_ws_t;
typedef const struct NotificationInfo *iox_notification_info_t;

typedef struct {
	uint64_t historyCapacity;
	const char *nodeName;
	bool offerOnCreate;
	enum iox_ConsumerTooSlowPolicy subscriberTooSlowPolicy;
	uint64_t initCheck;
} iox_pub_options_t;

typedef struct {
	uint64_t queueCapacity;
	uint64_t historyRequest;
	const char *nodeName;
	bool subscribeOnCreate;
	enum iox_QueueFullPolicy queueFullPolicy;
	bool requirePublisherHistorySupport;
	uint64_t initCheck;
} iox_sub_options_t;

void iox_pub_options_init(iox_pub_options_t *options);
iox_pub_t iox_pub_init(iox_pub_storage_t *self, const char *service, const char *instance, const char *event,
		       const iox_pub_options_t *options);
void iox_pub_deinit(iox_pub_t self);
enum iox_AllocationResult iox_pub_loan_chunk(iox_pub_t self, void **userPayload, uint32_t userPayloadSize);
void iox_pub_publish_chunk(iox_pub_t self, void *userPayload);
bool iox_pub_has_subscribers(iox_pub_t self);

void iox_sub_options_init(iox_sub_options_t *options);
iox_sub_t iox_sub_init(iox_sub_storage_t *self, const char *service, const char *instance, const char *event,
		       const iox_sub_options_t *options);
void iox_sub_deinit(iox_sub_t self);
enum iox_SubscribeState iox_sub_get_subscription_state(iox_sub_t self);
enum iox_ChunkReceiveResult iox_sub_take_chunk(iox_sub_t self, const void **userPayload);
void iox_sub_release_chunk(iox_sub_t self, const void *userPayload);

iox_ws_t iox_ws_init(iox_ws_storage_t *self);
void iox_ws_deinit(iox_ws_t self);
uint64_t iox_ws_timed_wait(iox_ws_t self, struct timespec timeout,
			   iox_notification_info_t *notificationInfoArray,
			   uint64_t notificationInfoArrayCapacity, uint64_t *missedElements);
enum iox_WaitSetResult iox_ws_attach_subscriber_state(iox_ws_t self, iox_sub_t subscriber,
						      enum iox_SubscriberState subscriberState, uint64_t id,
						      void (*callback)(iox_sub_t));
void iox_ws_detach_subscriber_state(iox_ws_t self, iox_sub_t subscriber,
				    enum iox_SubscriberState subscriberState);
#else
#define HAVE_ICEORYX 0
#endif

#if HAVE_ICEORYX

/* Every wait here, ours or iceoryx's, ends after this long without progress: -ETIMEDOUT ("wedged"). */
#define IOX_WAIT_MS 5000
#define IOX_SERVICE "shmq-bench"
#define IOX_EVENT "data"
#define IOX_NAME_PREFIX "shmq-iox-" /* runtime names, hence /tmp/<name> sockets and locks: ours alone */
#define ROUDI_LOCK "/tmp/iox-unique-roudi.lock"
#define ROUDI_CONFIG "/tmp/shmq-bench-iox-roudi.toml"

/*
 * RouDi's mempools, written to its config by start(). A chunk comes from the smallest pool that
 * fits the message; a message larger than the last pool would make iceoryx abort the sender, so
 * create() refuses it. RouDi writes all of this memory at start (about 190 MB here).
 */
static const struct {
	uint32_t size, count;
} pools[] = {
	{128, 10000}, {1024, 5000}, {4096, 1200}, {16384, 1200}, {65536, 600}, {262144, 300}, {1048576, 40},
};
#define POOLS (sizeof(pools) / sizeof(pools[0]))

/* RouDi drops a runtime that stopped sending keep-alives after 1.5 s (PROCESS_KEEP_ALIVE_TIMEOUT) */
#define ROUDI_FORGETS_MS 2000

struct peer_chan {
	struct peer_params p;
	char instance[64]; /* the tag, reduced to characters iceoryx takes in names */
};

struct iox_ep {
	enum peer_role role;
	size_t msg_size;
	int blocking;
	iox_pub_storage_t pub_storage;
	iox_pub_t pub;
	iox_sub_storage_t sub_storage;
	iox_sub_t sub;
	iox_ws_storage_t ws_storage;
	iox_ws_t ws;
};

/* Set by start() in the harness process; children read their copies. */
static pid_t roudi_pid;
static const char roudi_log[] = "/tmp/shmq-bench-iox-roudi.log";
static char roudi_why[512]; /* why start() failed, for probe() and create() */

/* This process's runtime: iceoryx allows one, named once, and a forked child must not reuse it. */
static pid_t rt_pid;

/*
 * The watchdog. iox_runtime_init and iox_pub_publish_chunk (while the subscriber's queue is full)
 * block inside iceoryx with no timeout of their own. guard_gen is odd while we are inside one of
 * them; only the calling thread writes it (plain stores), the watchdog only reads it.
 */
static _Atomic unsigned long guard_gen;
static atomic_bool guard_fired; /* the watchdog shut the runtime down: every later send fails */
static pid_t wd_pid;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

static void guard_enter(void)
{
	unsigned long g = atomic_load_explicit(&guard_gen, memory_order_relaxed);
	atomic_store_explicit(&guard_gen, g + 1, memory_order_relaxed);
}

static void guard_leave(void) { guard_enter(); }

static void *watchdog(void *arg)
{
	unsigned long last = 0;
	unsigned stalled = 0;
	(void)arg;
	for (;;) {
		sleep_ms(100);
		unsigned long g = atomic_load_explicit(&guard_gen, memory_order_relaxed);
		if (!(g & 1) || g != last) {
			last = g;
			stalled = 0;
			continue;
		}
		stalled += 100;
		if (stalled == IOX_WAIT_MS) {
			/* What iox_runtime_shutdown is for: RouDi disconnects our blocked publisher. */
			atomic_store(&guard_fired, true);
			iox_runtime_shutdown();
		} else if (stalled >= 3 * IOX_WAIT_MS) {
			/* Still inside iceoryx: returning is impossible, hanging the harness is worse. */
			static const char msg[] =
				"iceoryx: stuck inside iceoryx for 15 s (wedged), exiting\n";
			ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
			(void)n;
			_exit(75);
		}
	}
	return NULL;
}

static int watchdog_start(void)
{
	pthread_t t;
	if (wd_pid == getpid())
		return 0;
	if (pthread_create(&t, NULL, watchdog, NULL))
		return -EAGAIN;
	pthread_detach(t);
	wd_pid = getpid();
	return 0;
}

/* ---- the daemon -------------------------------------------------------------------------------- */

static const char *find_roudi(void)
{
	static char path[512];
	const char *dirs = getenv("PATH");
	if (!dirs || !*dirs)
		dirs = "/usr/local/bin:/usr/bin:/bin";
	for (const char *d = dirs; *d;) {
		size_t n = strcspn(d, ":");
		if (n && n < sizeof(path) - 16) {
			snprintf(path, sizeof(path), "%.*s/iox-roudi", (int)n, d);
			if (!access(path, X_OK))
				return path;
		}
		d += n + (d[n] == ':');
	}
	return NULL;
}

/* A live RouDi holds this lock (flock); its leftovers are ours to remove only when nobody does. */
static bool roudi_running_elsewhere(void)
{
	int fd = open(ROUDI_LOCK, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool held = flock(fd, LOCK_EX | LOCK_NB) && errno == EWOULDBLOCK;
	close(fd);
	return held;
}

static bool is_lock_file(const char *name)
{
	size_t n = strlen(name);
	return n > 5 && !strcmp(name + n - 5, ".lock");
}

/* What a killed RouDi and killed runtimes leave: two shm segments, lock files, UNIX sockets (a
 * runtime's are /tmp/<name> and /tmp/<name>.lock). */
static void remove_leftovers(void)
{
	struct passwd *pw = getpwuid(geteuid());
	shm_unlink("iceoryx_mgmt");
	if (pw)
		shm_unlink(pw->pw_name); /* the data segment is named after the user */
	unlink("/tmp/roudi");
	unlink("/tmp/roudi.lock");
	unlink(ROUDI_LOCK);

	DIR *d = opendir("/tmp");
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));)
		if (!strncmp(e->d_name, IOX_NAME_PREFIX, strlen(IOX_NAME_PREFIX)) &&
		    (e->d_type == DT_SOCK || is_lock_file(e->d_name)))
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

static void set_why(const char *fmt, const char *arg)
{
	snprintf(roudi_why, sizeof(roudi_why), "skipped: iox-roudi failed to start: ");
	size_t n = strlen(roudi_why);
	snprintf(roudi_why + n, sizeof(roudi_why) - n, fmt, arg);
}

/* The last line RouDi logged, for a failure message. */
static const char *log_tail(void)
{
	static char line[256];
	char buf[4096];
	line[0] = 0;
	int fd = open(roudi_log, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return line;
	off_t end = lseek(fd, 0, SEEK_END);
	off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
	close(fd);
	if (n <= 0)
		return line;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	const char *s = strrchr(buf, '\n');
	s = s ? s + 1 : buf;
	size_t k = 0;
	while (*s && k < sizeof(line) - 1) {
		if (*s == '\033') { /* RouDi colours its log: drop "ESC [ ... m" */
			s += strcspn(s, "m");
			s += !!*s;
			continue;
		}
		line[k++] = *s++;
	}
	line[k] = 0;
	return line;
}

static void reap_roudi(unsigned timeout_ms)
{
	uint64_t deadline = now_ms() + timeout_ms;
	while (waitpid(roudi_pid, NULL, WNOHANG) == 0) {
		if (now_ms() >= deadline) {
			kill(roudi_pid, SIGKILL);
			waitpid(roudi_pid, NULL, 0);
			break;
		}
		sleep_ms(10);
	}
	roudi_pid = 0;
}

/* RouDi is up when a runtime can register: try it in a throwaway child. */
static int probe_runtime(void)
{
	char name[64];
	int status;
	fflush(NULL); /* or the child's stdio buffers could be written twice */
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* "RouDi not found - waiting ..." is expected here, not news for the harness output */
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
		}
		snprintf(name, sizeof(name), IOX_NAME_PREFIX "probe-%d", (int)getpid());
		iox_set_loglevel(Iceoryx_LogLevel_Warn);
		iox_runtime_init(name);
		_exit(0);
	}
	uint64_t deadline = now_ms() + 2 * IOX_WAIT_MS;
	for (;;) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		if (waitpid(roudi_pid, &status, WNOHANG) == roudi_pid) {
			roudi_pid = 0;
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			char what[320];
			snprintf(what, sizeof(what), "it exited with status %d (%s)",
				 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
				 *log_tail() ? log_tail() : "no output");
			set_why("%s", what);
			return -ECHILD;
		}
		if (now_ms() >= deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			set_why("no runtime could register within 10 s (log: %s)", roudi_log);
			return -ETIMEDOUT;
		}
		sleep_ms(20);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		set_why("a test runtime failed to register (log: %s)", roudi_log);
		return -EIO;
	}
	return 0;
}

static int write_config(void)
{
	FILE *f = fopen(ROUDI_CONFIG, "w");
	if (!f)
		return -errno;
	fprintf(f, "[general]\nversion = 1\n\n[[segment]]\n");
	for (size_t i = 0; i < POOLS; i++)
		fprintf(f, "\n[[segment.mempool]]\nsize = %u\ncount = %u\n", pools[i].size, pools[i].count);
	return fclose(f) ? -errno : 0;
}

static int iox_start(void)
{
	if (roudi_pid)
		return 0;
	roudi_why[0] = 0;
	const char *exe = find_roudi();
	if (!exe) {
		set_why("%s", "iox-roudi not found in PATH (package iceoryx)");
		return -ENOENT;
	}
	if (roudi_running_elsewhere()) {
		set_why("%s", "another iox-roudi is running (it holds " ROUDI_LOCK ")");
		return -EBUSY;
	}
	remove_leftovers();
	int err = write_config();
	if (err) {
		set_why("cannot write " ROUDI_CONFIG ": %s", strerror(-err));
		return err;
	}
	int log = open(roudi_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (log < 0) {
		int err = -errno;
		set_why("cannot open its log: %s", strerror(-err));
		return err;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(log);
		set_why("fork: %s", strerror(-err));
		return err;
	}
	if (pid == 0) {
		/* If the harness dies, RouDi goes with it rather than squatting on the lock. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		execl(exe, "iox-roudi", "--monitoring-mode", "on", "--config-file", ROUDI_CONFIG,
		      (char *)NULL);
		dprintf(STDERR_FILENO, "exec %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	close(log);
	roudi_pid = pid;

	err = probe_runtime();
	if (err) {
		if (roudi_pid) {
			kill(roudi_pid, SIGKILL);
			reap_roudi(1000);
		}
		remove_leftovers();
		return err;
	}
	return 0;
}

static void iox_stop(void)
{
	if (!roudi_pid)
		return;
	/*
	 * RouDi 2.0.3, when SIGTERMed, SIGTERMs every runtime it still lists and dies on an assertion
	 * if one has already exited without deregistering, which is how children that _exit or are
	 * SIGKILLed leave. It forgets those 1.5 s after their last keep-alive: wait that out first.
	 */
	sleep_ms(ROUDI_FORGETS_MS);
	kill(roudi_pid, SIGTERM);
	reap_roudi(IOX_WAIT_MS);
	remove_leftovers();
	unlink(ROUDI_CONFIG);
}

static const char *iox_probe(void)
{
	if (roudi_why[0])
		return roudi_why;
	if (!find_roudi())
		return "iox-roudi not found in PATH (package iceoryx)";
	return NULL;
}

/* ---- channels and endpoints -------------------------------------------------------------------- */

static struct peer_chan *iox_create(const struct peer_params *p)
{
	if (!roudi_pid) {
		fprintf(stderr, "iceoryx: %s\n",
			roudi_why[0] ? roudi_why : "iox-roudi is not running (start() not called)");
		return NULL;
	}
	if (p->msg_size > pools[POOLS - 1].size) {
		fprintf(stderr, "iceoryx: %zu B messages: RouDi's largest chunk here is %u B\n", p->msg_size,
			pools[POOLS - 1].size);
		return NULL;
	}
	struct peer_chan *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->p = *p;
	/* iceoryx names are fixed-size strings; keep the tag to what needs no escaping anywhere. */
	size_t i = 0;
	for (; p->tag[i] && i < sizeof(c->instance) - 1; i++) {
		char ch = p->tag[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
			  ch == '-' || ch == '_';
		c->instance[i] = ok ? ch : '_';
	}
	c->instance[i] = 0;
	return c;
}

static void iox_destroy(struct peer_chan *c) { free(c); }

static int runtime_up(const struct peer_chan *c, enum peer_role role)
{
	char name[96];
	if (rt_pid == getpid())
		return 0;
	if (rt_pid) {
		fprintf(stderr, "iceoryx: this process was forked from one that attached; an iceoryx "
				"runtime cannot be inherited\n");
		return -EINVAL;
	}
	if (!roudi_pid || (kill(roudi_pid, 0) && errno == ESRCH)) {
		fprintf(stderr, "iceoryx: iox-roudi is not running\n");
		return -ENOTCONN;
	}
	int err = watchdog_start();
	if (err)
		return err;
	snprintf(name, sizeof(name), IOX_NAME_PREFIX "%.48s-%c%d", c->instance,
		 role == PEER_SENDER ? 's' : 'r', (int)getpid());
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	guard_enter();
	iox_runtime_init(name); /* a runtime that cannot register aborts the process */
	guard_leave();
	rt_pid = getpid();
	return 0;
}

static void iox_detach(void *ep_)
{
	struct iox_ep *ep = ep_;
	if (!ep)
		return;
	if (ep->ws) {
		iox_ws_detach_subscriber_state(ep->ws, ep->sub, SubscriberState_HAS_DATA);
		iox_ws_deinit(ep->ws);
	}
	if (ep->sub)
		iox_sub_deinit(ep->sub);
	if (ep->pub)
		iox_pub_deinit(ep->pub);
	/* No iox_runtime_shutdown here: it only unblocks publishers, and the runtime deregisters
	 * itself at exit (or RouDi's monitoring drops it after _exit). */
	free(ep);
}

static int attach_sender(struct iox_ep *ep, const struct peer_chan *c)
{
	iox_pub_options_t o;
	iox_pub_options_init(&o);
	o.historyCapacity = 0;
	o.offerOnCreate = true;
	o.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	ep->pub = iox_pub_init(&ep->pub_storage, IOX_SERVICE, c->instance, IOX_EVENT, &o);
	if (!ep->pub)
		return -EIO;
	/* History is 0: a sample published before the subscriber is connected is lost. */
	uint64_t deadline = now_ms() + IOX_WAIT_MS;
	while (!iox_pub_has_subscribers(ep->pub)) {
		if (now_ms() >= deadline) {
			fprintf(stderr, "iceoryx: %s: no subscriber within %d ms\n", c->p.tag, IOX_WAIT_MS);
			return -ETIMEDOUT;
		}
		sleep_ms(1);
	}
	return 0;
}

/*
 * params.depth (0: the most iceoryx allows), and at most what leaves the mempool enough for two
 * full channels and their publishers' loans: a publisher facing an empty pool can only spin.
 */
static uint64_t queue_capacity(const struct peer_params *p)
{
	uint64_t cap = iox_cfg_max_subscriber_queue_capacity();
	size_t i = 0;
	while (pools[i].size < p->msg_size)
		i++;
	uint64_t fits = pools[i].count / 2 - iox_cfg_max_chunks_allocated_per_publisher_simultaneously() - 2;
	if (fits < cap)
		cap = fits;
	return p->depth && p->depth < cap ? p->depth : cap;
}

static int attach_receiver(struct iox_ep *ep, const struct peer_chan *c)
{
	iox_sub_options_t o;
	iox_sub_options_init(&o);
	o.queueCapacity = queue_capacity(&c->p);
	o.historyRequest = 0;
	o.subscribeOnCreate = true;
	o.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	ep->sub = iox_sub_init(&ep->sub_storage, IOX_SERVICE, c->instance, IOX_EVENT, &o);
	if (!ep->sub)
		return -EIO;
	/*
	 * Wait until RouDi has taken the subscription: SUBSCRIBED, or WAIT_FOR_OFFER when the sender
	 * has not offered yet (RouDi then connects us as it offers, before the sender's attach sees a
	 * subscriber). Waiting for SUBSCRIBED alone would deadlock a receiver attached first.
	 */
	uint64_t deadline = now_ms() + IOX_WAIT_MS;
	for (;;) {
		enum iox_SubscribeState s = iox_sub_get_subscription_state(ep->sub);
		if (s == SubscribeState_SUBSCRIBED || s == SubscribeState_WAIT_FOR_OFFER)
			break;
		if (now_ms() >= deadline) {
			fprintf(stderr,
				"iceoryx: %s: subscription not acknowledged within %d ms (state %d)\n",
				c->p.tag, IOX_WAIT_MS, (int)s);
			return -ETIMEDOUT;
		}
		sleep_ms(1);
	}
	if (ep->blocking) {
		ep->ws = iox_ws_init(&ep->ws_storage);
		if (!ep->ws)
			return -EIO;
		if (iox_ws_attach_subscriber_state(ep->ws, ep->sub, SubscriberState_HAS_DATA, 0, NULL) !=
		    WaitSetResult_SUCCESS)
			return -EIO;
	}
	return 0;
}

/* NULL with errno set on failure (ETIMEDOUT: iceoryx did not answer in time). */
static void *iox_attach(struct peer_chan *c, enum peer_role role)
{
	int err = runtime_up(c, role);
	if (err) {
		errno = -err;
		return NULL;
	}
	struct iox_ep *ep = calloc(1, sizeof(*ep));
	if (!ep) {
		errno = ENOMEM;
		return NULL;
	}
	ep->role = role;
	ep->msg_size = c->p.msg_size;
	ep->blocking = c->p.blocking;
	err = role == PEER_SENDER ? attach_sender(ep, c) : attach_receiver(ep, c);
	if (err) {
		iox_detach(ep);
		errno = -err;
		return NULL;
	}
	return ep;
}

/* One round of a bounded wait: yields the CPU; -ETIMEDOUT once IOX_WAIT_MS have passed since the
 * first round (*deadline 0 starts the clock). */
static int wait_round(uint64_t *deadline)
{
	if (!*deadline)
		*deadline = now_ms() + IOX_WAIT_MS;
	else if (now_ms() >= *deadline)
		return -ETIMEDOUT;
	sched_yield();
	return 0;
}

static int iox_send(void *ep_, const void *msg, size_t len)
{
	struct iox_ep *ep = ep_;
	uint64_t deadline = 0;
	void *chunk;
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	if (atomic_load_explicit(&guard_fired, memory_order_relaxed))
		return -ETIMEDOUT;
	/* No subscriber (it died; a new one is attaching): publishing now would drop the message. */
	while (!iox_pub_has_subscribers(ep->pub))
		if (wait_round(&deadline))
			return -ETIMEDOUT;
	for (;;) {
		enum iox_AllocationResult r = iox_pub_loan_chunk(ep->pub, &chunk, (uint32_t)len);
		if (r == AllocationResult_SUCCESS)
			break;
		if (r == AllocationResult_NO_MEMPOOLS_AVAILABLE ||
		    r == AllocationResult_INVALID_PARAMETER_FOR_USER_PAYLOAD_OR_USER_HEADER)
			return -EMSGSIZE; /* larger than RouDi's largest mempool chunk */
		if (r != AllocationResult_RUNNING_OUT_OF_CHUNKS &&
		    r != AllocationResult_TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL)
			return -EIO;
		/* the mempool is empty: chunks sit in the subscriber's queue (or a dead one's) */
		if (wait_round(&deadline))
			return -ETIMEDOUT;
	}
	memcpy(chunk, msg, len);
	/* Blocks while the subscriber's queue is full (WAIT_FOR_CONSUMER); the watchdog bounds it. */
	guard_enter();
	iox_pub_publish_chunk(ep->pub, chunk);
	guard_leave();
	if (atomic_load_explicit(&guard_fired, memory_order_relaxed))
		return -ETIMEDOUT;
	return 0;
}

static int take(struct iox_ep *ep, void *buf)
{
	const void *chunk;
	enum iox_ChunkReceiveResult r = iox_sub_take_chunk(ep->sub, &chunk);
	if (r == ChunkReceiveResult_NO_CHUNK_AVAILABLE)
		return 0;
	if (r != ChunkReceiveResult_SUCCESS)
		return r == ChunkReceiveResult_TOO_MANY_CHUNKS_HELD_IN_PARALLEL ? -ENOBUFS : -EIO;
	memcpy(buf, chunk, ep->msg_size);
	iox_sub_release_chunk(ep->sub, chunk);
	return (int)ep->msg_size;
}

static int iox_recv(void *ep_, void *buf, size_t cap)
{
	struct iox_ep *ep = ep_;
	uint64_t deadline = 0;
	if (cap < ep->msg_size)
		return -EMSGSIZE;
	int n = take(ep, buf);
	if (n)
		return n;
	if (!ep->blocking) {
		for (unsigned spins = 1;; spins++) {
			cpu_relax();
			if ((n = take(ep, buf)))
				return n;
			/* now and then: the clock, and our CPU to the sender if it shares it */
			if (!(spins & 4095) && wait_round(&deadline))
				return -ETIMEDOUT;
		}
	}
	deadline = now_ms() + IOX_WAIT_MS;
	for (;;) {
		iox_notification_info_t info[1];
		uint64_t missed = 0, now = now_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		uint64_t left = deadline - now;
		struct timespec ts = {.tv_sec = (time_t)(left / 1000),
				      .tv_nsec = (long)(left % 1000) * 1000000L};
		/* HAS_DATA is a state: the wait returns at once while the queue is not empty */
		iox_ws_timed_wait(ep->ws, ts, info, 1, &missed);
		if ((n = take(ep, buf)))
			return n;
	}
}

#define IOX_FLAGS (PEER_BUSY_POLL | PEER_BLOCKING | PEER_NEEDS_DAEMON)

const struct peer_ops peer_iceoryx = {
	.name = "iceoryx",
	.describe = "iceoryx 2.0 pub/sub via iox-roudi: loan a chunk, copy in, publish; take, copy out, "
		    "release (publisher blocks when the subscriber queue is full)",
	.flags = IOX_FLAGS,
	.probe = iox_probe,
	.start = iox_start,
	.stop = iox_stop,
	.create = iox_create,
	.attach = iox_attach,
	.send = iox_send,
	.recv = iox_recv,
	.detach = iox_detach,
	.destroy = iox_destroy,
};

#else /* !HAVE_ICEORYX */

static const char *iox_probe(void) { return "iceoryx C binding not installed (libiceoryx-binding-c-dev)"; }

const struct peer_ops peer_iceoryx = {
	.name = "iceoryx",
	.describe = "iceoryx 2.0 pub/sub via iox-roudi (not built: no C binding headers)",
	.flags = PEER_BUSY_POLL | PEER_BLOCKING | PEER_NEEDS_DAEMON,
	.probe = iox_probe,
};

#endif
