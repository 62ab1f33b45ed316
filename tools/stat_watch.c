/* SPDX-License-Identifier: MIT */
/*
 * stat_watch.c: `shmq stat NAME --watch`: a live view, refreshed in place like top(1), with
 * per-second rates computed between refreshes. Quits on q, Ctrl-C or SIGTERM and restores the
 * terminal. The terminal control is a minimal, documented ANSI subset (no curses): alternate
 * screen on/off (ESC[?1049h/l), cursor hide/show (ESC[?25l/h), home (ESC[H), clear to end of line
 * (ESC[K) and of screen (ESC[J). When standard output is not a terminal, frames are printed one
 * after another with no escapes, so `--watch --refreshes N | ...` can be logged or tested.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

struct watch {
	const char *cmd, *name;
	shmq_view_t *v;
	uint64_t interval_ms;
	int tty_out, tty_in;
	struct termios saved;
	struct shmq_participant_info *parts;
	struct shmq_stats prev;
	uint64_t prev_ns;
	int have_prev;
	ino_t ino; /* of the segment the view maps (0: NAME was unlinked) */
	char note[CLI_WHY_MAX + NAME_MAX +
		  32];	/* the frame's second line: what happened to NAME, if anything */
	char line[512]; /* the line being built, cut to the width when it ends (eol) */
	size_t len;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* stdin: no line buffering and no echo, so a lone 'q' arrives at once; ISIG stays on, so
 * Ctrl-C is still SIGINT. */
static void term_enter(struct watch *w)
{
	w->tty_out = isatty(STDOUT_FILENO);
	w->tty_in = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &w->saved) == 0;
	if (w->tty_in) {
		struct termios t = w->saved;
		t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		t.c_cc[VMIN] = 0;
		t.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &t);
	}
	if (w->tty_out)
		fputs("\033[?1049h\033[?25l", stdout);
}

static void term_leave(struct watch *w)
{
	if (w->tty_out) {
		fputs("\033[?25h\033[?1049l", stdout);
		fflush(stdout);
	}
	if (w->tty_in)
		tcsetattr(STDIN_FILENO, TCSANOW, &w->saved);
}

static unsigned term_rows(const struct watch *w)
{
	struct winsize ws;
	if (w->tty_out && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
		return ws.ws_row;
	return 0; /* no limit */
}

/* The width lines are cut to: the terminal's, or 80 columns when it has none (a pipe, a log). */
static unsigned term_cols(const struct watch *w)
{
	struct winsize ws;
	if (w->tty_out && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col < sizeof(w->line) ? ws.ws_col : (unsigned)sizeof(w->line) - 1;
	return 80;
}

/* Appends to the line being built (cut at the buffer's end; eol cuts it to the width). */
__attribute__((format(printf, 2, 3))) static void put(struct watch *w, const char *fmt, ...)
{
	size_t room = sizeof(w->line) - w->len;
	if (room <= 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(w->line + w->len, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		w->len += (size_t)n < room ? (size_t)n : room - 1;
}

/* Ends a line: prints what was built, cut to the width, and clears what an earlier, longer frame
 * left on it. */
static void eol(struct watch *w)
{
	unsigned cols = term_cols(w);
	fwrite(w->line, 1, w->len < cols ? w->len : cols, stdout);
	fputs(w->tty_out ? "\033[K\n" : "\n", stdout);
	w->len = 0;
}

static double rate(uint64_t now, uint64_t before, double secs)
{
	return now >= before && secs > 0 ? (double)(now - before) / secs : 0.0;
}

static void age(char *buf, size_t sz, uint64_t now_ms, uint64_t then_ms)
{
	if (!then_ms)
		snprintf(buf, sz, "-");
	else
		snprintf(buf, sz, "%.1fs", (double)(now_ms > then_ms ? now_ms - then_ms : 0) / 1000.0);
}

/* The role and doing texts of the library, in the few columns a row has. */
static const char *short_role(const char *role)
{
	return !strcmp(role, "producer+consumer") ? "prod+cons" : role;
}
static const char *short_doing(const char *doing)
{
	if (!strcmp(doing, "waiting for messages"))
		return "wait msgs";
	if (!strcmp(doing, "waiting for room"))
		return "wait room";
	return *doing ? "wait both" : "-";
}

static void frame(struct watch *w, const struct shmq_snapshot *s, unsigned nparts)
{
	const struct shmq_stats *st = &s->stats;
	uint64_t now = mono_ns();
	double secs = w->have_prev ? (double)(now - w->prev_ns) / 1e9 : 0;
	char clock[32];
	time_t t = time(NULL);
	strftime(clock, sizeof(clock), "%H:%M:%S", localtime(&t));
	unsigned rows = term_rows(w), used = 0;

	if (w->tty_out)
		fputs("\033[H", stdout);
	/* the name last: a long one is what the width cuts */
	put(w, "%s  every %llu ms  (q quits)  shmq stat %s", clock, (unsigned long long)w->interval_ms,
	    cli_bare_name(w->name));
	eol(w);
	put(w, "%s", w->note);
	eol(w);
	put(w, "depth     ready %llu  in flight %llu  delayed %llu  dead %llu", (unsigned long long)st->ready,
	    (unsigned long long)st->inflight, (unsigned long long)st->delayed, (unsigned long long)st->dead);
	eol(w);
	put(w, "slots     writing %llu  free %llu of %u", (unsigned long long)st->writing,
	    (unsigned long long)st->free_slots, st->config.capacity);
	if (st->ready)
		put(w, "  oldest ready %.1fs (id %llu)", (double)s->oldest_ready_age_ms / 1000.0,
		    (unsigned long long)s->oldest_ready_id);
	eol(w);
	if (s->lanes > 1) {
		/* one line for all lanes: their ready, then in-flight counts, lane 0 first */
		put(w, "lanes     %u %s, %u consumer%s  ready", s->lanes,
		    cli_dispatch_name(st->config.dispatch), s->consumers, s->consumers == 1 ? "" : "s");
		for (uint32_t l = 0; l < s->lanes && l < SHMQ_LANES_MAX; l++)
			put(w, " %llu", (unsigned long long)s->lane[l].ready);
		put(w, "  in flight");
		for (uint32_t l = 0; l < s->lanes && l < SHMQ_LANES_MAX; l++)
			put(w, " %llu", (unsigned long long)s->lane[l].inflight);
		eol(w);
		used++;
	}
	if (w->have_prev) {
		const struct shmq_stats *p = &w->prev;
		put(w, "rate/s    sent %.0f  received %.0f  acked %.0f", rate(st->sent, p->sent, secs),
		    rate(st->received, p->received, secs), rate(st->acked, p->acked, secs));
		eol(w);
		put(w, "          nacked %.0f  retried %.0f  dead-lettered %.0f",
		    rate(st->nacked, p->nacked, secs), rate(st->retried, p->retried, secs),
		    rate(st->dead_lettered, p->dead_lettered, secs));
	} else {
		put(w, "rate/s    (from the next refresh)");
		eol(w);
	}
	eol(w);
	put(w, "totals    sent %llu  received %llu  acked %llu", (unsigned long long)st->sent,
	    (unsigned long long)st->received, (unsigned long long)st->acked);
	eol(w);
	put(w, "          nacked %llu  retried %llu  dead-lettered %llu  stale %llu",
	    (unsigned long long)st->nacked, (unsigned long long)st->retried,
	    (unsigned long long)st->dead_lettered, (unsigned long long)st->stale);
	eol(w);
	put(w, "reclaim   expired %llu  dead owner %llu  retired writes %llu  passes %llu",
	    (unsigned long long)st->reclaimed_expired, (unsigned long long)st->reclaimed_dead_owner,
	    (unsigned long long)st->retired_writes, (unsigned long long)st->reclaim_passes);
	eol(w);
	put(w, "participants  %u alive, %u gone%s", st->participants, s->dead_participants,
	    s->consistent ? "" : "  (figures taken while they moved)");
	eol(w);
	eol(w);
	used += 13;
	/* 78 columns: the counters take 8 each (99,999,999), a wider value pushes the row on */
	put(w, "%3s %7s %-5s %-9s %-9s %6s %6s %8s %8s %8s", "idx", "pid", "alive", "role", "doing", "leases",
	    "active", "sent", "received", "acked");
	eol(w);
	for (unsigned i = 0; i < nparts && i < s->records; i++) {
		const struct shmq_participant_info *p = &w->parts[i];
		if (rows && used + 2 >= rows) {
			put(w, "  ... %u more", s->records - i);
			eol(w);
			break;
		}
		char act[32], pid[16];
		age(act, sizeof(act), s->now_ms, p->last_active_ms);
		snprintf(pid, sizeof(pid), "%d%s", (int)p->pid, p->pid_here == 0 ? "*" : "");
		put(w, "%3u %7s %-5s %-9s %-9s %6u %6s %8llu %8llu %8llu", p->index, pid,
		    p->alive == 1   ? "yes"
		    : p->alive == 0 ? "no"
				    : "?",
		    short_role(p->role), short_doing(p->doing), p->leases, act, (unsigned long long)p->sent,
		    (unsigned long long)p->received, (unsigned long long)p->acked);
		eol(w);
		used++;
	}
	if (w->tty_out)
		fputs("\033[J", stdout);
	else
		putchar('\n');
	w->prev = *st;
	w->prev_ns = now;
	w->have_prev = 1;
}

/* The inode of /dev/shm/NAME (0: none there): the segment a view of NAME would map now. */
static ino_t entry_ino(const char *name)
{
	char path[sizeof(CLI_SHM_DIR) + NAME_MAX + 1];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", CLI_SHM_DIR, cli_bare_name(name));
	return lstat(path, &st) == 0 && S_ISREG(st.st_mode) ? st.st_ino : 0;
}

/* Before a frame: notices that NAME was unlinked, or unlinked and created anew, since the view was
 * opened, and follows it: a new segment gets a new view (rates start again), none keeps the last
 * view's figures under a note saying so, as does anything else found there instead. */
static void follow(struct watch *w)
{
	ino_t now = entry_ino(w->name);
	if (now == w->ino) {
		if (now)
			w->note[0] = '\0';
		return;
	}
	char clock[32];
	time_t t = time(NULL);
	strftime(clock, sizeof(clock), "%H:%M:%S", localtime(&t));
	if (!now) {
		snprintf(w->note, sizeof(w->note), "UNLINKED at %s: figures of the removed segment", clock);
		w->ino = 0;
		return;
	}
	shmq_view_t *v;
	struct cli_obj o;
	if (cli_obj_probe(w->name, 1, &o) != CLI_OBJ_QUEUE) {
		snprintf(w->note, sizeof(w->note), "'%s' is now %s", cli_bare_name(w->name), o.why);
		return; /* looked at again at the next refresh */
	}
	v = o.view;
	shmq_view_close(w->v);
	w->v = v;
	w->ino = now;
	w->have_prev = 0;
	snprintf(w->note, sizeof(w->note), "created anew at %s: a new segment, figures from zero", clock);
}

/* Sleeps until the next refresh; 1 when the user asked to quit. */
static int wait_key(struct watch *w)
{
	uint64_t until = mono_ns() + w->interval_ms * 1000000ULL;
	for (;;) {
		if (stop_signal)
			return 1;
		uint64_t now = mono_ns();
		if (now >= until)
			return 0;
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		int ms = (int)((until - now + 999999) / 1000000);
		int n = poll(&pfd, w->tty_in ? 1 : 0, ms);
		if (n > 0) {
			char c[16];
			ssize_t k = read(STDIN_FILENO, c, sizeof(c));
			for (ssize_t i = 0; i < k; i++)
				if (c[i] == 'q' || c[i] == 'Q')
					return 1;
			if (k == 0)
				w->tty_in = 0; /* end of input: stop polling it */
		}
	}
}

int stat_watch(const char *cmd, const char *name, uint64_t interval_ms, uint64_t refreshes)
{
	struct watch w = {.cmd = cmd, .name = name, .interval_ms = interval_ms};
	int r = cli_view_open(cmd, name, &w.v, NULL);
	if (r)
		return r;
	w.ino = entry_ino(name);
	w.parts = calloc(SHMQ_MAX_PARTICIPANTS, sizeof(*w.parts));
	if (!w.parts) {
		shmq_view_close(w.v);
		return cli_error(CLI_FAIL, cmd, "out of memory");
	}
	/* SA_RESTART keeps a write to the terminal from failing with EINTR; poll() is cut short by
	 * the signal anyway (signal(7): it is never restarted) */
	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART}, old_int, old_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	term_enter(&w);
	for (uint64_t n = 0; !refreshes || n < refreshes; n++) {
		struct shmq_snapshot s;
		follow(&w);
		int k = shmq_view_snapshot(w.v, &s, w.parts, SHMQ_MAX_PARTICIPANTS);
		if (k < 0) {
			term_leave(&w);
			r = cli_error(CLI_FAIL, cmd, "cannot read '%s': %s", name, cli_strerror(k));
			goto out;
		}
		frame(&w, &s, (unsigned)k);
		if ((r = cli_flush_stdout(cmd))) {
			term_leave(&w);
			goto out;
		}
		if ((refreshes && n + 1 == refreshes) || wait_key(&w))
			break;
	}
	term_leave(&w);
	r = cli_flush_stdout(cmd);
out:
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	free(w.parts);
	shmq_view_close(w.v);
	return r;
}
