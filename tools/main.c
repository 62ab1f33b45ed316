/* SPDX-License-Identifier: MIT */
/* main.c: the shmq tool's entry point: subcommand dispatch, help and version. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

struct cli_cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help; /* synopsis line(s), then the description, indented */
};

/* the trust options of every command that opens a queue for use (cli_open) */
#define TRUST_HELP                                                                                           \
	"    --trust-owner USER   open the queue although it belongs to USER (a name or a uid) or,\n"        \
	"                         if it is yours, although every user may write it; without this,\n"         \
	"                         such a queue is refused: whoever made its name first reads what\n"         \
	"                         you send\n"                                                                \
	"    --trust-group GROUP  open the queue if its group is GROUP (a name or a gid), whoever\n"         \
	"                         owns it and whatever its mode: a queue shared within a group\n"            \
	"                         (--mode 0660 of create)\n"

static const struct cli_cmd cmds[] = {
	{"create", cmd_create,
	 "create NAME [--capacity N] [--slot-size BYTES] [--lease-ms MS] [--max-deliveries N]\n"
	 "            [--retry-base-ms MS] [--retry-max-ms MS] [--mode OCTAL]\n"
	 "            [--dlq-max N] [--reclaim-interval-ms MS] [--dedup-window-ms MS]\n"
	 "            [--dedup-entries N] [--lanes N [--dispatch POLICY [--weights W,...]]]\n"
	 "    Create a queue (fails if NAME exists).\n"
	 "    --capacity N         slots: --lanes times a power of two >= 2, at most 4194304\n"
	 "                         (default 1024; e.g. 96 for --lanes 3)\n"
	 "    --slot-size BYTES    bytes per slot, 48 of them shmq's header: a multiple of 64\n"
	 "                         from 128 to 16777216 (default 256, for payloads up to 208 bytes)\n"
	 "    --lease-ms MS        how long a received message stays leased to its receiver\n"
	 "                         before it is delivered again (default 30000)\n"
	 "    --max-deliveries N   deliveries before a message is dead-lettered, 1 to 255 (default 16)\n"
	 "    --retry-base-ms MS   redelivery delay after the n-th delivery: base * 2^(n-1) ...\n"
	 "    --retry-max-ms MS    ... capped at this (defaults 100 and 30000)\n"
	 "    --mode OCTAL         permissions of the segment, at most 0777 (default 0600;\n"
	 "                         the umask is not applied)\n"
	 "    --dlq-max N          dead letters kept, at most the capacity (default: capacity/4);\n"
	 "                         beyond it the oldest is dropped and counted\n"
	 "    --reclaim-interval-ms MS  receivers requeue expired leases and a dead consumer's\n"
	 "                         messages at most this often (default 100; 0: only a watchdog\n"
	 "                         or shmq_reclaim does, up to 3600000)\n"
	 "    --dedup-window-ms MS how long idempotency keys and done records are remembered\n"
	 "                         (default 120000; 0: no dedup table)\n"
	 "    --dedup-entries N    dedup table entries, a power of two >= 16 (default: 2 x\n"
	 "                         capacity rounded up to a power of two, at least 64); a full\n"
	 "                         table evicts the oldest key\n"
	 "    --lanes N            sub-rings, 1 to 16 (default 1), each capacity/N slots; each\n"
	 "                         consumer serves its share of the lanes and takes from the\n"
	 "                         others when its own are empty (except under key-hash: one\n"
	 "                         consumer per lane, one message of a lane in hand at a time)\n"
	 "    --dispatch POLICY    how a send picks its lane: round-robin (default), random,\n"
	 "                         weighted (by --weights), key-hash (by the routing key of\n"
	 "                         send --route or the --key: one key, one lane, in order; no\n"
	 "                         key: round robin), least-loaded (fewest undelivered)\n"
	 "    --weights W,...      with --dispatch weighted: one weight per lane, 1 to 1000\n"
	 "                         (default all 1); lane i gets W_i / sum(W) of the sends\n"
	 "    --json               print the queue as made: one JSON object, schema\n"
	 "                         \"shmq.create/1\" (segment_bytes, config as stat's)\n"},
	{"send", cmd_send,
	 "send NAME [--timeout-ms MS] [--route KEY] [--json] [--key KEY PAYLOAD | PAYLOAD...]\n"
	 "    Send one message per PAYLOAD, in order; with no PAYLOAD, one message per line of\n"
	 "    standard input (newline stripped). Stops at the first message that fails and says\n"
	 "    how many were sent before it. Options go before the first PAYLOAD; put -- before\n"
	 "    the payloads if the first one starts with '-'.\n"
	 "    --timeout-ms MS      wait at most MS for room in a full queue, per message\n"
	 "                         (0: never wait; default: wait forever)\n"
	 "    --json               print each message's id as it is sent, one JSON object a\n"
	 "                         line: {\"id\": N} ({\"id\": N, \"duplicate\": true} for a --key\n"
	 "                         sent before: N is the first one's)\n"
	 "    --key KEY            idempotency key (1-64 bytes) for one PAYLOAD: if KEY was sent\n"
	 "                         within the queue's dedup window, print 'duplicate: ...' and\n"
	 "                         send nothing (exit 0)\n"
	 "    --route KEY          routing key (1-64 bytes) for every message of this command:\n"
	 "                         on a --dispatch key-hash queue they all go to one lane, so\n"
	 "                         they are first delivered in send order; other policies\n"
	 "                         ignore it. A --key send without --route is routed by its\n"
	 "                         --key; with both, by the route (an SQS FIFO group id next to\n"
	 "                         a deduplication id)\n" TRUST_HELP},
	{"recv", cmd_recv,
	 "recv NAME [--count N] [--timeout-ms MS] [--no-ack | --dedup] [--json]\n"
	 "    Print each message's payload on its own line, then ack it once its reader has it:\n"
	 "    into a pipe or a socket, one line at a time, acked when nothing written is left\n"
	 "    unread (the lease is extended while the reader takes its time); into a file or a\n"
	 "    terminal, once written. A reader that leaves (| head -n 1) ends recv, exit 0, and\n"
	 "    the line it did not take goes back to the queue at once. So a message whose line\n"
	 "    may be lost (the process died, the reader left, standard output failed) is\n"
	 "    delivered again: at least once, never lost. Receiving\n"
	 "    also runs the queue's recovery pass every --reclaim-interval-ms (of create), which\n"
	 "    gives back messages whose consumer died or whose lease ran out.\n"
	 "    --count N            exit after N messages (N >= 1; default: no limit)\n"
	 "    --timeout-ms MS      exit once MS pass with no message (default: wait forever):\n"
	 "                         exit status 4 if no message arrived at all, 0 otherwise\n"
	 "    --no-ack             print but do not ack: each message stays leased until its\n"
	 "                         lease (--lease-ms of create) runs out or this process exits;\n"
	 "                         then the next recv delivers it again (a delivery that counts\n"
	 "                         toward --max-deliveries)\n"
	 "    --json               one JSON object per message and line: id, lane, deliveries,\n"
	 "                         enqueued_ns, key (or null), payload (bytes outside printable\n"
	 "                         ASCII as \\u00XX): a payload with a newline stays one line\n"
	 "    --dedup              record each message done (by its key, else its id) when acking\n"
	 "                         it, and ack without printing one already recorded done (its\n"
	 "                         consumer died between the work and the ack)\n" TRUST_HELP},
	{"stat", cmd_stat,
	 "stat NAME [--json | --watch [--interval-ms MS] [--refreshes N]]\n"
	 "stat --prometheus [NAME... | --all]\n"
	 "    Print the queue's owner and mode, configuration, depths (ready, in flight, delayed,\n"
	 "    dead-lettered, being written, free), the age of the oldest ready message, each lane\n"
	 "    of a queue of more than one (weight, ready, in flight, ticket counters, consumer\n"
	 "    pid), each participant (pid, alive, role, leases held, last activity, counters) and\n"
	 "    the totals. Reads the segment read-only: takes no participant record and no lock,\n"
	 "    writes nothing. On a busy queue the snapshot is retried while traffic moves under\n"
	 "    it, and says so.\n"
	 "    --json               one JSON object, schema \"shmq.stat/1\" (docs/stat-json.md)\n"
	 "    --prometheus         Prometheus text exposition format (0.0.4), every sample\n"
	 "                         labelled queue=\"NAME\": of each queue named, in one\n"
	 "                         exposition (each family once), or of every queue in /dev/shm\n"
	 "                         when none is named (or --all); per-participant series are\n"
	 "                         labelled by record index=\"N\", never by pid\n"
	 "    --watch              a live view refreshed in place, with rates per second between\n"
	 "                         refreshes; q, Ctrl-C or SIGTERM quits and restores the terminal\n"
	 "    --interval-ms MS     time between refreshes, 10 to 3600000 (default 1000)\n"
	 "    --refreshes N        quit after N refreshes (default: until asked)\n"},
	{"peek", cmd_peek,
	 "peek NAME [--count N] [--inflight] [--hex | --json]\n"
	 "    Show the messages waiting (ready, or delayed for redelivery), oldest first (by send\n"
	 "    time, a 1-4 ms clock, then id), without\n"
	 "    receiving them: id, state, deliveries, age, time left before redelivery, size and\n"
	 "    payload (printable bytes as text, the rest as '.'); on a queue of more than one\n"
	 "    lane, each message's lane too (ids follow send order within a lane). Read-only,\n"
	 "    like stat.\n"
	 "    --count N            show at most N (default 10)\n"
	 "    --inflight           also leased messages, with the holder's pid and lease time left\n"
	 "    --hex                the whole payload as a hex dump under each row\n"
	 "    --json               one JSON object: {queue, waiting, messages: [...]}\n"},
	{"check", cmd_check,
	 "check NAME [--json]\n"
	 "    Check the segment's consistency (fsck): header, every slot's state word, the ticket\n"
	 "    counters, participant records and counters that must agree. Prints each finding,\n"
	 "    then a verdict (--json: one object, schema \"shmq.check/1\": sound, errors,\n"
	 "    warnings and the findings, each with its severity). Read-only; on a live queue, findings in "
	 "slots that change while\n"
	 "    checked are re-read, so traffic is not reported. Exit status 0: sound (warnings,\n"
	 "    such as leases of a dead process a reclaim pass will requeue, allowed); 3: errors\n"
	 "    (the segment is corrupt); 1: could not check.\n"
	 "check --health NAME [--warn-depth N] [--max-depth N] [--warn-age-ms MS] [--max-age-ms MS]\n"
	 "                    [--warn-dead N] [--max-dead N]\n"
	 "    A monitoring probe in the convention of Nagios plugins: one status line\n"
	 "    (\"SHMQ OK - NAME: depth 3, oldest 12 ms, dead 0 | depth=3 age_ms=12 dead=0\")\n"
	 "    and the exit status 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the queue is missing,\n"
	 "    not a queue or corrupt; a usage error too). depth: messages ready, in flight and\n"
	 "    delayed; oldest: age of the oldest ready message; dead: dead letters. Each figure\n"
	 "    is WARNING above its --warn-* threshold and CRITICAL above its --max-* one (equal\n"
	 "    is fine; a figure without one is not judged). Read-only, like stat.\n"},
	{"exporter", cmd_exporter,
	 "exporter [--listen HOST:PORT] [NAME...]\n"
	 "    Serve the queues' figures over HTTP for Prometheus: GET /metrics answers with the\n"
	 "    exposition of stat --prometheus (Content-Type: text/plain; version=0.0.4) from\n"
	 "    fresh read-only snapshots at each scrape, of the queues named (those that exist)\n"
	 "    or of every queue in /dev/shm when none is: a queue created later appears, one\n"
	 "    unlinked goes. Other paths: 404. Prints the address it listens on, then serves\n"
	 "    until SIGINT or SIGTERM (exit 0).\n"
	 "    --listen HOST:PORT   address to listen on (default 127.0.0.1:9464; [::1]:PORT for\n"
	 "                         IPv6, :PORT for every address, port 0: one the kernel picks)\n"},
	{"watchdog", cmd_watchdog,
	 "watchdog NAME... [--interval-ms MS] [--once] [--json]\n"
	 "    Run the recovery pass over each queue every MS (default 50) until SIGINT or SIGTERM:\n"
	 "    requeue leases whose consumer died (kernel lock probe) or whose deadline passed,\n"
	 "    with backoff, or dead-letter them at --max-deliveries; free slots a dead producer\n"
	 "    never published; free the registry records of processes that are gone (\"records\n"
	 "    freed\"). Prints what each pass repaired, and totals at the end. Keeps no\n"
	 "    state: kill and restart it freely, or run several; nothing is requeued twice.\n"
	 "    --interval-ms MS     time between passes, 1 to 3600000 (default 50)\n"
	 "    --once               one pass over each queue, then exit\n"
	 "    --json               one JSON object a line, schema \"shmq.watchdog/1\": per pass\n"
	 "                         that repaired something (every pass with --once) and the\n"
	 "                         totals at the end (\"event\": \"pass\" or \"total\")\n" TRUST_HELP},
	{"dlq", cmd_dlq,
	 "dlq NAME list [--json] | redrive [--count N] [--json] | purge [--count N] [--json]\n"
	 "    The dead-letter queue, oldest first. list: id, reason (max deliveries, lease\n"
	 "    expired, rejected, consumer crashed), deliveries, last holder's pid, age and the\n"
	 "    payload (--json: an array, one object per letter; bytes outside printable ASCII as\n"
	 "    \\u00XX). redrive: back into the queue with a fresh delivery count. purge: delete.\n"
	 "    --count N            redrive or purge at most N (default: all)\n"
	 "    --json               list: the array; redrive and purge: one object, schema\n"
	 "                         \"shmq.dlq/1\" (queue, action, count)\n" TRUST_HELP},
	{"list", cmd_list,
	 "list [--json]\n"
	 "    Every object in /dev/shm with its size, owner and mode: for a queue its depths\n"
	 "    (ready, in flight, delayed, dead-lettered) and live participants; anything else is\n"
	 "    listed as what it is (not a shmq segment, not initialised, corrupted and why,\n"
	 "    another layout, unreadable).\n"
	 "    Read-only, like stat.\n"
	 "    --json               one JSON object, schema \"shmq.list/1\" (docs/stat-json.md)\n"},
	{"work", cmd_work,
	 "work NAME [--threads N] [--prefetch N] [--dedup] [--timeout-ms MS] [--grace-ms MS]\n"
	 "          [--json] -- CMD [ARGS...]\n"
	 "    Run CMD (no shell) once per message, the payload on its standard input and\n"
	 "    SHMQ_MSG_ID, SHMQ_DELIVERIES and SHMQ_QUEUE in its environment, until SIGINT or\n"
	 "    SIGTERM. CMD's exit status settles the message: 0 acks it; 75 (EX_TEMPFAIL) retries\n"
	 "    it after the queue's backoff; 65 (EX_DATAERR) rejects it to the dead-letter queue;\n"
	 "    any other status, a signal, or a timeout is a failed delivery, retried after the\n"
	 "    backoff until --max-deliveries (of create) dead-letters it. Each failure gets a line\n"
	 "    on stderr. While CMD runs, its lease is extended, however long it takes. CMD runs in\n"
	 "    a process group of its own, under a reaper process (its parent); the whole group\n"
	 "    (CMD and what it started) is killed when CMD exits, at a timeout, at the end of\n"
	 "    --grace-ms, and when this process dies, SIGKILL included (the queue's reclaim pass\n"
	 "    gives its messages to other consumers). SIGINT or SIGTERM stops taking messages\n"
	 "    and waits for the CMDs running; a second one stops them at once.\n"
	 "    --threads N          CMDs run at once, 1 to 1024 (default 1)\n"
	 "    --prefetch N         hold at most N messages leased at once in this process\n"
	 "                         (default: no limit), so a slow worker does not hoard work\n"
	 "                         other consumers could do; threads beyond N wait\n"
	 "    --dedup              when CMD exits 0, record the message done (by its key, else\n"
	 "                         its id) before the ack; ack without running CMD a message\n"
	 "                         recorded done already (its worker died between CMD's exit\n"
	 "                         and the ack, or another consumer did the key's work). A\n"
	 "                         worker that dies while CMD runs records nothing: that\n"
	 "                         message runs again. The queue needs a dedup table\n"
	 "                         (--dedup-window-ms of create, not 0)\n"
	 "    --timeout-ms MS      a CMD still running after MS gets SIGTERM, and SIGKILL 1 s\n"
	 "                         later; the delivery counts as failed (default: no limit)\n"
	 "    --grace-ms MS        after a stop, wait at most MS for the CMDs running, then\n"
	 "                         stop them and give their messages back (default: no limit)\n"
	 "    --json               the summary at the end as one JSON object on stderr (stdout\n"
	 "                         is the CMDs'), schema \"shmq.work/1\"\n" TRUST_HELP},
	{"set", cmd_set,
	 "set NAME [--lease-ms MS] [--max-deliveries N] [--retry-base-ms MS] [--retry-max-ms MS]\n"
	 "         [--reclaim-interval-ms MS] [--dlq-max N] [--json]\n"
	 "    Change the settings a live queue may change (the options mean what they mean for\n"
	 "    create). Every process using the queue acts on them from its next receive, settle\n"
	 "    or reclaim pass, each checking them first; leases already given keep their\n"
	 "    deadlines. Prints each setting, new and old.\n"
	 "    --json               one object, schema \"shmq.set/1\": the six settings as now\n"
	 "                         (alone: as they are, changing nothing)\n" TRUST_HELP},
	{"purge", cmd_purge,
	 "purge NAME [--count N] [--json]\n"
	 "    Delete the messages that are due (ready, or past their retry delay), oldest first,\n"
	 "    as RabbitMQ's purge_queue does; leased, delayed and dead-lettered ones stay (shmq\n"
	 "    dlq NAME purge for the last). Prints how many went and what is left.\n"
	 "    --count N            at most N messages (default: all that are due, at most the\n"
	 "                         capacity: producers sending meanwhile cannot keep it going)\n"
	 "    --json               one object: schema shmq.purge/1, queue, purged, ready,\n"
	 "                         inflight, delayed, dead\n" TRUST_HELP},
	{"bridge", cmd_bridge,
	 "bridge NAME (--to URL | --from URL --durable D) --subject S [--stream ST [--create]]\n"
	 "    Extend the queue past this host through NATS JetStream, at least once: runs\n"
	 "    shmq-bridge (installed next to shmq, or found on PATH) with these arguments; see\n"
	 "    shmq-bridge --help. --to publishes what NAME receives, acking each message in NAME\n"
	 "    only after JetStream's PubAck; --from sends what the durable D delivers into NAME\n"
	 "    (which needs a dedup table), acking in JetStream only after the send.\n"},
	{"unlink", cmd_unlink,
	 "unlink NAME [--force]\n"
	 "    Remove the queue. Refused (exit 1) while processes use it (they would keep using a\n"
	 "    queue no other process can open) and for an object that is not a shmq segment;\n"
	 "    a corrupted queue, or one of another layout, is removed.\n"
	 "    --force              remove it anyway (a warning names the live participants)\n"},
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static const struct cli_cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < NCMDS; i++)
		if (!strcmp(cmds[i].name, name))
			return &cmds[i];
	return NULL;
}

void cli_help(FILE *f, const char *cmd)
{
	const struct cli_cmd *c = cmd ? find_cmd(cmd) : NULL;
	if (c) {
		fprintf(f, "shmq %s", c->help);
		return;
	}
	fputs("usage: shmq COMMAND NAME [OPTIONS] [ARGS]\n"
	      "\n"
	      "A leased, crash-safe message queue in POSIX shared memory. NAME is a shm name:\n"
	      "\"jobs\" and \"/jobs\" are the same queue (/dev/shm/jobs on Linux).\n"
	      "\n",
	      f);
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "shmq %s\n", cmds[i].help);
	fputs("shmq help [COMMAND], shmq --help, shmq -h\n"
	      "    Print this help (or one command's). Every command also takes -h/--help.\n"
	      "shmq --version\n"
	      "    Print the version.\n"
	      "\n"
	      "Numbers are decimal (--mode: octal) and non-negative. Options may come before or after\n"
	      "NAME. Exit status: 0 on success, 1 on a runtime failure, 2 on a usage error; check\n"
	      "exits 3 on a corrupt segment, recv 4 when --timeout-ms passed before any message;\n"
	      "check --health exits as a Nagios plugin (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).\n",
	      f);
}

static int help(int argc, char **argv)
{
	if (argc > 2)
		return cli_error(CLI_USAGE, "help", "unexpected argument '%s'", argv[2]);
	if (argc == 2 && !find_cmd(argv[1]))
		return cli_error(CLI_USAGE, "help", "unknown command '%s'", argv[1]);
	cli_help(stdout, argc == 2 ? argv[1] : NULL);
	return cli_flush_stdout("help");
}

/* A closed fd 0, 1 or 2 would be reused by shm_open, and stdio would then read or write the
 * segment itself. Park /dev/null there, opened so that using it fails (EBADF) rather than
 * pretending: reading stdout, writing stdin. */
static int guard_stdio(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int nfd = open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
		if (nfd != fd) /* the lowest free fd is this one: anything else is a failure */
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (guard_stdio())
		return CLI_FAIL;
	/* a closed stdout must show up as EPIPE from a write we check, not kill us mid-message */
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		return cli_error(CLI_USAGE, NULL, "missing command");
	const char *name = argv[1];
	if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h"))
		return help(argc - 1, argv + 1);
	if (!strcmp(name, "--version")) {
		if (argc > 2)
			return cli_error(CLI_USAGE, NULL, "unexpected argument '%s'", argv[2]);
		printf("shmq %d.%d\n", SHMQ_VERSION_MAJOR, SHMQ_VERSION_MINOR);
		return cli_flush_stdout(NULL);
	}
	const struct cli_cmd *c = find_cmd(name);
	if (!c) {
		if (name[0] == '-')
			return cli_error(CLI_USAGE, NULL, "unknown option '%s'", name);
		return cli_error(CLI_USAGE, NULL, "unknown command '%s'", name);
	}
	int r = c->run(argc - 1, argv + 1);
	if (r == CLI_DONE)
		return cli_flush_stdout(name);
	return r;
}
