/* SPDX-License-Identifier: MIT */
/* cmd_queue.c: `shmq create` and `shmq unlink`: a queue's life cycle. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "cli.h"
#include "stat.h"

/* The library's limits (see shmq_config_validate) that shmq.h does not name. */
#define LEASE_MS_MAX (7ULL * 24 * 3600 * 1000)
#define RETRY_MS_MAX (24ULL * 3600 * 1000)
#define SEGMENT_SLOTS_MAX (1ULL << 40) /* capacity * slot_size */

enum {
	O_CAPACITY = CLI_OPT_BASE,
	O_SLOT_SIZE,
	O_LEASE_MS,
	O_MAX_DELIVERIES,
	O_RETRY_BASE_MS,
	O_RETRY_MAX_MS,
	O_MODE,
	O_DLQ_MAX,
	O_RECLAIM_INTERVAL_MS,
	O_DEDUP_WINDOW_MS,
	O_DEDUP_ENTRIES,
	O_LANES,
	O_DISPATCH,
	O_WEIGHTS,
	O_CREATE_JSON,
};

static const struct option create_opts[] = {
	{"capacity", required_argument, NULL, O_CAPACITY},
	{"slot-size", required_argument, NULL, O_SLOT_SIZE},
	{"lease-ms", required_argument, NULL, O_LEASE_MS},
	{"max-deliveries", required_argument, NULL, O_MAX_DELIVERIES},
	{"retry-base-ms", required_argument, NULL, O_RETRY_BASE_MS},
	{"retry-max-ms", required_argument, NULL, O_RETRY_MAX_MS},
	{"mode", required_argument, NULL, O_MODE},
	{"dlq-max", required_argument, NULL, O_DLQ_MAX},
	{"reclaim-interval-ms", required_argument, NULL, O_RECLAIM_INTERVAL_MS},
	{"dedup-window-ms", required_argument, NULL, O_DEDUP_WINDOW_MS},
	{"dedup-entries", required_argument, NULL, O_DEDUP_ENTRIES},
	{"lanes", required_argument, NULL, O_LANES},
	{"dispatch", required_argument, NULL, O_DISPATCH},
	{"weights", required_argument, NULL, O_WEIGHTS},
	{"json", no_argument, NULL, O_CREATE_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* What create's options set. Some rules tie options together (--capacity and --weights depend on
 * --lanes, which may come after them): those are checked once all are parsed. */
struct create_args {
	struct shmq_config cfg;
	int capacity_given;
	const char *weights; /* --weights as given, NULL: none */
	unsigned nweights;
	int json; /* --json: print what was made */
};

/* "3,1,1,1" into a->cfg.weights; the count is checked against --lanes later. */
static int parse_weights(const char *cmd, const char *arg, struct create_args *a)
{
	char buf[16];
	unsigned n = 0;
	for (const char *p = arg;; p++) {
		size_t len = strcspn(p, ",");
		uint64_t v;
		snprintf(buf, sizeof(buf), "%.*s", (int)(len < sizeof(buf) ? len : sizeof(buf) - 1), p);
		if (len >= sizeof(buf) || cli_parse_u64(buf, 10, SHMQ_WEIGHT_MAX, &v) || v < 1)
			return cli_error(
				CLI_USAGE, cmd,
				"--weights must be comma-separated whole numbers between 1 and %d, got "
				"'%s'",
				SHMQ_WEIGHT_MAX, arg);
		if (n == SHMQ_LANES_MAX)
			return cli_error(CLI_USAGE, cmd,
					 "--weights has more than %d values (the most lanes), got '%s'",
					 SHMQ_LANES_MAX, arg);
		a->cfg.weights[n++] = (uint32_t)v;
		p += len;
		if (!*p)
			break;
	}
	a->weights = arg;
	a->nweights = n;
	return 0;
}

static int create_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct create_args *a = ctx;
	struct shmq_config *cfg = &a->cfg;
	uint64_t v;
	int r = 0;
	switch (opt) {
	case O_CREATE_JSON:
		a->json = 1;
		return 0;
	case O_CAPACITY:
		/* whether it fits --lanes is checked once every option is in */
		if (!(r = cli_opt_range(cmd, "--capacity", arg, 2, SHMQ_CAPACITY_MAX, &v))) {
			cfg->capacity = (uint32_t)v;
			a->capacity_given = 1;
		}
		break;
	case O_LANES:
		if (!(r = cli_opt_range(cmd, "--lanes", arg, 1, SHMQ_LANES_MAX, &v)))
			cfg->lanes = (uint32_t)v;
		break;
	case O_DISPATCH:
		if (cli_dispatch_parse(arg, &cfg->dispatch))
			return cli_error(CLI_USAGE, cmd, "--dispatch must be one of %s, got '%s'",
					 CLI_DISPATCH_NAMES, arg);
		break;
	case O_WEIGHTS:
		r = parse_weights(cmd, arg, a);
		break;
	case O_SLOT_SIZE:
		if (cli_parse_u64(arg, 10, SHMQ_SLOT_SIZE_MAX, &v) || v < SHMQ_SLOT_SIZE_MIN || v % 64)
			return cli_error(CLI_USAGE, cmd,
					 "--slot-size must be a multiple of 64 between %u and %u, got '%s'",
					 SHMQ_SLOT_SIZE_MIN, SHMQ_SLOT_SIZE_MAX, arg);
		cfg->slot_size = (uint32_t)v;
		break;
	case O_LEASE_MS:
		if (!(r = cli_opt_range(cmd, "--lease-ms", arg, 1, LEASE_MS_MAX, &v)))
			cfg->lease_ms = (uint32_t)v;
		break;
	case O_MAX_DELIVERIES:
		if (!(r = cli_opt_range(cmd, "--max-deliveries", arg, 1, SHMQ_MAX_DELIVERIES_MAX, &v)))
			cfg->max_deliveries = (uint32_t)v;
		break;
	case O_RETRY_BASE_MS:
		if (!(r = cli_opt_range(cmd, "--retry-base-ms", arg, 0, RETRY_MS_MAX, &v)))
			cfg->retry_base_ms = (uint32_t)v;
		break;
	case O_RETRY_MAX_MS:
		if (!(r = cli_opt_range(cmd, "--retry-max-ms", arg, 0, RETRY_MS_MAX, &v)))
			cfg->retry_max_ms = (uint32_t)v;
		break;
	case O_MODE:
		if (cli_parse_u64(arg, 8, 0777, &v))
			return cli_error(CLI_USAGE, cmd,
					 "--mode must be an octal number no greater than 0777, got '%s'",
					 arg);
		cfg->mode = (mode_t)v;
		break;
	case O_DLQ_MAX:
		if (!(r = cli_opt_range(cmd, "--dlq-max", arg, 1, SHMQ_CAPACITY_MAX, &v)))
			cfg->dlq_max = (uint32_t)v;
		break;
	case O_RECLAIM_INTERVAL_MS:
		if (!(r = cli_opt_range(cmd, "--reclaim-interval-ms", arg, 0, SHMQ_RECLAIM_INTERVAL_MAX, &v)))
			cfg->reclaim_interval_ms = (uint32_t)v;
		break;
	case O_DEDUP_WINDOW_MS:
		if (!(r = cli_opt_range(cmd, "--dedup-window-ms", arg, 0, 7u * 24 * 3600 * 1000, &v)))
			cfg->dedup_window_ms = (uint32_t)v;
		break;
	case O_DEDUP_ENTRIES:
		if (!(r = cli_opt_range(cmd, "--dedup-entries", arg, 16, SHMQ_DEDUP_ENTRIES_MAX, &v))) {
			if (v & (v - 1))
				return cli_error(CLI_USAGE, cmd,
						 "--dedup-entries must be a power of two, got '%s'", arg);
			cfg->dedup_entries = (uint32_t)v;
		}
		break;
	}
	return r;
}

/* create --json: the queue as made, read back through a view (schema shmq.create/1). */
static int print_created(const char *cmd, const char *name)
{
	shmq_view_t *v;
	struct stat_report rep;
	int r = cli_view_open(cmd, name, &v, NULL);
	if (r)
		return r;
	r = stat_report_load(v, name, &rep);
	shmq_view_close(v);
	if (r)
		return cli_error(CLI_FAIL, cmd, "created '%s', then cannot read it: %s", name,
				 cli_strerror(r));
	r = stat_print_created_json(&rep);
	stat_report_free(&rep);
	if (r)
		return cli_error(CLI_FAIL, cmd, "out of memory building the JSON");
	return cli_flush_stdout(cmd);
}

int cmd_create(int argc, char **argv)
{
	const char *cmd = "create";
	struct create_args ca = {0};
	struct shmq_config cfg;
	struct cli_args a;
	shmq_t *q;
	int r;

	shmq_config_init(&ca.cfg);
	if ((r = cli_parse(cmd, argc, argv, create_opts, create_opt, &ca, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	cfg = ca.cfg;
	/* the rules that tie two options together */
	uint32_t per_lane = cfg.capacity / cfg.lanes;
	if (cfg.capacity % cfg.lanes || per_lane < 2 || (per_lane & (per_lane - 1))) {
		if (cfg.lanes == 1)
			return cli_error(CLI_USAGE, cmd,
					 "--capacity must be a power of two between 2 and %u, got '%u'",
					 SHMQ_CAPACITY_MAX, cfg.capacity);
		/* the nearest capacities that would do, to say what to give instead */
		uint64_t lo = 2;
		char also[32] = "";
		while (lo * 2 * cfg.lanes <= cfg.capacity)
			lo *= 2;
		lo *= cfg.lanes;
		if (lo * 2 <= SHMQ_CAPACITY_MAX)
			snprintf(also, sizeof(also), " or %llu", (unsigned long long)lo * 2);
		return cli_error(CLI_USAGE, cmd,
				 "--capacity must be --lanes times a power of two >= 2, got --capacity %u%s "
				 "with --lanes %u (%llu%s would do)",
				 cfg.capacity, ca.capacity_given ? "" : " (the default)", cfg.lanes,
				 (unsigned long long)lo, also);
	}
	if (ca.weights && cfg.dispatch != SHMQ_DISPATCH_WEIGHTED)
		return cli_error(CLI_USAGE, cmd,
				 "--weights goes only with --dispatch weighted (dispatch is %s)",
				 cli_dispatch_name(cfg.dispatch));
	if (ca.weights && ca.nweights != cfg.lanes)
		return cli_error(CLI_USAGE, cmd,
				 "--weights '%s' has %u value%s, --lanes is %u: give one per lane",
				 ca.weights, ca.nweights, ca.nweights == 1 ? "" : "s", cfg.lanes);
	if (cfg.retry_base_ms > cfg.retry_max_ms)
		return cli_error(CLI_USAGE, cmd, "--retry-base-ms (%u) exceeds --retry-max-ms (%u)",
				 cfg.retry_base_ms, cfg.retry_max_ms);
	if (cfg.dlq_max > cfg.capacity)
		return cli_error(CLI_USAGE, cmd, "--dlq-max of %u exceeds the capacity of %u", cfg.dlq_max,
				 cfg.capacity);
	if ((uint64_t)cfg.capacity * cfg.slot_size > SEGMENT_SLOTS_MAX)
		return cli_error(CLI_USAGE, cmd,
				 "%u slots of %u bytes are %llu bytes, more than the limit of %llu (1 TiB)",
				 cfg.capacity, cfg.slot_size,
				 (unsigned long long)cfg.capacity * cfg.slot_size, SEGMENT_SLOTS_MAX);
	/* the library has the last word */
	if ((r = shmq_config_validate(&cfg)))
		return cli_error(CLI_USAGE, cmd, "invalid configuration: %s", cli_strerror(r));

	r = shmq_create(a.name, &cfg, &q);
	if (r == -EEXIST)
		return cli_error(CLI_FAIL, cmd, "queue '%s' already exists", a.name);
	if (r)
		return cli_error(CLI_FAIL, cmd, "cannot create queue '%s': %s", a.name, cli_strerror(r));
	shmq_close(q);
	if (cfg.mode & 0002)
		fprintf(stderr,
			"shmq: create: warning: '%s' is writable by every user: processes refuse to open it "
			"unless they trust its owner (--trust-owner; see \"Who may open a queue\")\n",
			cli_bare_name(a.name));
	return ca.json ? print_created(cmd, a.name) : CLI_OK;
}

enum {
	O_FORCE = CLI_OPT_BASE,
};

static const struct option unlink_opts[] = {
	{"force", no_argument, NULL, O_FORCE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int unlink_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	(void)cmd;
	(void)opt;
	(void)arg;
	*(int *)ctx = 1; /* --force is the only option */
	return 0;
}

/* The processes alive on the queue of view v (a snapshot of its participant records). */
static uint32_t live_participants(shmq_view_t *v)
{
	struct shmq_snapshot snap;
	return shmq_view_snapshot(v, &snap, NULL, 0) < 0 ? 0 : snap.stats.participants;
}

/* `shmq unlink NAME [--force]`: removes a queue no process uses, a corrupted one or one of another
 * layout. A queue with live participants, or an object that is not a shmq segment, stays unless
 * --force: removing the first leaves its processes working on a queue no one else can open any
 * more, removing the second deletes someone else's data. */
int cmd_unlink(int argc, char **argv)
{
	const char *cmd = "unlink";
	struct cli_args a;
	struct cli_obj o;
	int force = 0, r;
	uint32_t alive = 0;

	if ((r = cli_parse(cmd, argc, argv, unlink_opts, unlink_opt, &force, &a)) ||
	    (r = cli_no_rest(cmd, &a)))
		return r;
	switch (cli_obj_probe(a.name, 1, &o)) {
	case CLI_OBJ_GONE:
		return cli_error(CLI_FAIL, cmd, "no such queue '%s'", a.name);
	case CLI_OBJ_QUEUE:
		alive = live_participants(o.view);
		shmq_view_close(o.view);
		if (alive && !force)
			return cli_error(
				CLI_FAIL, cmd,
				"queue '%s' has %u live participant%s: not removed (--force removes it; "
				"they keep using it, and no other process can open it)",
				a.name, alive, alive == 1 ? "" : "s");
		break;
	case CLI_OBJ_FOREIGN:
	case CLI_OBJ_UNINIT:
		if (!force)
			return cli_error(CLI_FAIL, cmd, "'%s' is %s: not removed (--force removes it)",
					 a.name, o.why);
		break;
	default: /* corrupted, another layout, unreadable: an operator may clear it away */
		break;
	}
	r = shmq_unlink(a.name);
	if (r == -ENOENT)
		return cli_error(CLI_FAIL, cmd, "no such queue '%s'", a.name);
	if (r)
		return cli_error(CLI_FAIL, cmd, "cannot remove queue '%s': %s", a.name, cli_strerror(r));
	if (alive)
		fprintf(stderr, "shmq: unlink: removed '%s' with %u live participant%s: they keep using it\n",
			a.name, alive, alive == 1 ? "" : "s");
	return CLI_OK;
}

enum {
	O_PURGE_COUNT = CLI_OPT_BASE,
	O_PURGE_JSON,
};

static const struct option purge_opts[] = {
	{"count", required_argument, NULL, O_PURGE_COUNT},
	{"json", no_argument, NULL, O_PURGE_JSON},
	CLI_TRUST_OPTIONS,
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct purge_args {
	uint64_t count; /* 0: all that are due */
	int json;
};

static int purge_opt(const char *cmd, int opt, const char *arg, void *ctx)
{
	struct purge_args *p = ctx;
	if (opt == O_PURGE_JSON) {
		p->json = 1;
		return 0;
	}
	return cli_opt_range(cmd, "--count", arg, 1, SHMQ_CAPACITY_MAX, &p->count);
}

/* `shmq purge NAME [--count N] [--json]`: deletes the messages that are due (shmq_purge). */
int cmd_purge(int argc, char **argv)
{
	const char *cmd = "purge";
	struct purge_args p = {0};
	struct cli_args a;
	shmq_t *q;
	int r;

	if ((r = cli_parse(cmd, argc, argv, purge_opts, purge_opt, &p, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	if ((r = cli_open(cmd, a.name, &q)))
		return r;
	int n = shmq_purge(q, p.count ? (unsigned)p.count : UINT32_MAX);
	struct shmq_stats st;
	int sr = n < 0 ? 0 : shmq_stats(q, &st);
	shmq_close(q);
	if (n < 0)
		return cli_error(CLI_FAIL, cmd, "cannot purge '%s': %s", a.name, cli_strerror(n));
	if (sr)
		return cli_error(CLI_FAIL, cmd, "purged %d, then cannot read '%s': %s", n, a.name,
				 cli_strerror(sr));
	if (p.json)
		printf("{\"schema\": \"shmq.purge/1\", \"queue\": \"%s\", \"purged\": %d, \"ready\": %llu, "
		       "\"inflight\": %llu, \"delayed\": %llu, \"dead\": %llu}\n",
		       cli_bare_name(a.name), n, (unsigned long long)st.ready,
		       (unsigned long long)st.inflight, (unsigned long long)st.delayed,
		       (unsigned long long)st.dead);
	else
		printf("purged %d message%s from %s; left: %llu ready, %llu in flight, %llu delayed, %llu "
		       "dead-lettered\n",
		       n, n == 1 ? "" : "s", cli_bare_name(a.name), (unsigned long long)st.ready,
		       (unsigned long long)st.inflight, (unsigned long long)st.delayed,
		       (unsigned long long)st.dead);
	return cli_flush_stdout(cmd);
}

static const struct option set_opts[] = {
	{"lease-ms", required_argument, NULL, O_LEASE_MS},
	{"max-deliveries", required_argument, NULL, O_MAX_DELIVERIES},
	{"retry-base-ms", required_argument, NULL, O_RETRY_BASE_MS},
	{"retry-max-ms", required_argument, NULL, O_RETRY_MAX_MS},
	{"reclaim-interval-ms", required_argument, NULL, O_RECLAIM_INTERVAL_MS},
	{"dlq-max", required_argument, NULL, O_DLQ_MAX},
	{"json", no_argument, NULL, O_CREATE_JSON},
	CLI_TRUST_OPTIONS,
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

#define UNSET UINT32_MAX /* a setting set does not change */

/* The six settings of a config, with their names in set's output. */
static const struct setting {
	const char *name, *unit;
	size_t off;
} settings[] = {
	{"lease_ms", "ms", offsetof(struct shmq_config, lease_ms)},
	{"max_deliveries", "", offsetof(struct shmq_config, max_deliveries)},
	{"retry_base_ms", "ms", offsetof(struct shmq_config, retry_base_ms)},
	{"retry_max_ms", "ms", offsetof(struct shmq_config, retry_max_ms)},
	{"reclaim_interval_ms", "ms", offsetof(struct shmq_config, reclaim_interval_ms)},
	{"dlq_max", "", offsetof(struct shmq_config, dlq_max)},
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static uint32_t *setting_of(struct shmq_config *c, size_t i)
{
	return (uint32_t *)((char *)c + settings[i].off);
}

/* `shmq set NAME [--lease-ms MS] ...`: changes the settings a live queue may change
 * (shmq_settings_update); prints each one, old and new. */
int cmd_set(int argc, char **argv)
{
	const char *cmd = "set";
	struct create_args ca = {0};
	struct cli_args a;
	shmq_t *q;
	int r;
	for (size_t i = 0; i < NSETTINGS; i++)
		*setting_of(&ca.cfg, i) = UNSET;
	if ((r = cli_parse(cmd, argc, argv, set_opts, create_opt, &ca, &a)) || (r = cli_no_rest(cmd, &a)))
		return r;
	int given = 0;
	for (size_t i = 0; i < NSETTINGS; i++)
		given += *setting_of(&ca.cfg, i) != UNSET;
	if (!given && !ca.json)
		return cli_error(CLI_USAGE, cmd,
				 "nothing to change: give at least one of --lease-ms, "
				 "--max-deliveries, --retry-base-ms, --retry-max-ms, "
				 "--reclaim-interval-ms, --dlq-max");
	if ((r = cli_open(cmd, a.name, &q)))
		return r;
	struct shmq_stats st;
	if ((r = shmq_stats(q, &st))) {
		r = cli_error(CLI_FAIL, cmd, "cannot read '%s': %s", a.name, cli_strerror(r));
		goto out;
	}
	struct shmq_config was = st.config, now = st.config;
	for (size_t i = 0; i < NSETTINGS; i++)
		if (*setting_of(&ca.cfg, i) != UNSET)
			*setting_of(&now, i) = *setting_of(&ca.cfg, i);
	if (now.retry_base_ms > now.retry_max_ms) {
		r = cli_error(CLI_USAGE, cmd, "retry base %u ms would exceed retry max %u ms",
			      now.retry_base_ms, now.retry_max_ms);
		goto out;
	}
	if (now.dlq_max > now.capacity) {
		r = cli_error(CLI_USAGE, cmd, "--dlq-max of %u exceeds the capacity of %u", now.dlq_max,
			      now.capacity);
		goto out;
	}
	if (given && (r = shmq_settings_update(q, &now))) {
		r = cli_error(CLI_FAIL, cmd, "cannot change the settings of '%s': %s", a.name,
			      cli_strerror(r));
		goto out;
	}
	if (ca.json) {
		printf("{\"schema\": \"shmq.set/1\", \"queue\": \"%s\"", cli_bare_name(a.name));
		for (size_t i = 0; i < NSETTINGS; i++)
			printf(", \"%s\": %u", settings[i].name, *setting_of(&now, i));
		printf("}\n");
	} else {
		for (size_t i = 0; i < NSETTINGS; i++)
			printf("%s %s %u%s%s (was %u)\n", cli_bare_name(a.name), settings[i].name,
			       *setting_of(&now, i), *settings[i].unit ? " " : "", settings[i].unit,
			       *setting_of(&was, i));
	}
	r = cli_flush_stdout(cmd);
out:
	shmq_close(q);
	return r;
}
