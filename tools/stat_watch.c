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
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

/* Ends a line: clear what an earlier, longer frame left on it. */
static void eol(const struct watch *w) { fputs(w->tty_out ? "\033[K\n" : "\n", stdout); }

static double rate(uint64_t now, uint64_t before, double secs)
{
	return now >= before && secs > 0 ? (double)(now - before) / secs : 0.0;
}

static void age(char *buf, size_t sz, uint64_t now_ms, uint64_t then_ms)
{
	if (!then_ms)
		snprintf(buf, sz, "-");
	else
		snprintf(buf, sz, "%.1f s", (double)(now_ms > then_ms ? now_ms - then_ms : 0) / 1000.0);
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
	printf("shmq stat %s   every %llu ms   %s   (q or Ctrl-C quits)", cli_bare_name(w->name),
	       (unsigned long long)w->interval_ms, clock);
	eol(w);
	eol(w);
	printf("depth     ready %llu   in flight %llu   delayed %llu   dead %llu   writing %llu   free "
	       "%llu/%u",
	       (unsigned long long)st->ready, (unsigned long long)st->inflight,
	       (unsigned long long)st->delayed, (unsigned long long)st->dead, (unsigned long long)st->writing,
	       (unsigned long long)st->free_slots, st->config.capacity);
	eol(w);
	if (st->ready)
		printf("oldest    ready for %.1f s (id %llu)", (double)s->oldest_ready_age_ms / 1000.0,
		       (unsigned long long)s->oldest_ready_id);
	else
		printf("oldest    nothing ready");
	eol(w);
	if (s->lanes > 1) {
		/* one line for all lanes: their ready, then in-flight counts, lane 0 first */
		printf("lanes     %u (%s), %u consumer%s   ready", s->lanes,
		       cli_dispatch_name(st->config.dispatch), s->consumers, s->consumers == 1 ? "" : "s");
		for (uint32_t l = 0; l < s->lanes && l < SHMQ_LANES_MAX; l++)
			printf(" %llu", (unsigned long long)s->lane[l].ready);
		printf("   in flight");
		for (uint32_t l = 0; l < s->lanes && l < SHMQ_LANES_MAX; l++)
			printf(" %llu", (unsigned long long)s->lane[l].inflight);
		eol(w);
		used++;
	}
	if (w->have_prev) {
		const struct shmq_stats *p = &w->prev;
		printf("rate/s    sent %.0f   received %.0f   acked %.0f   nacked %.0f   retried %.0f   "
		       "dead-lettered %.0f",
		       rate(st->sent, p->sent, secs), rate(st->received, p->received, secs),
		       rate(st->acked, p->acked, secs), rate(st->nacked, p->nacked, secs),
		       rate(st->retried, p->retried, secs), rate(st->dead_lettered, p->dead_lettered, secs));
	} else {
		printf("rate/s    (from the next refresh)");
	}
	eol(w);
	printf("totals    sent %llu   received %llu   acked %llu   nacked %llu   retried %llu   "
	       "dead-lettered "
	       "%llu   stale %llu",
	       (unsigned long long)st->sent, (unsigned long long)st->received, (unsigned long long)st->acked,
	       (unsigned long long)st->nacked, (unsigned long long)st->retried,
	       (unsigned long long)st->dead_lettered, (unsigned long long)st->stale);
	eol(w);
	printf("reclaim   expired %llu   dead owner %llu   retired writes %llu   passes %llu",
	       (unsigned long long)st->reclaimed_expired, (unsigned long long)st->reclaimed_dead_owner,
	       (unsigned long long)st->retired_writes, (unsigned long long)st->reclaim_passes);
	eol(w);
	printf("participants  %u alive, %u gone%s", st->participants, s->dead_participants,
	       s->consistent ? "" : "   (busy: figures taken while they moved)");
	eol(w);
	eol(w);
	used += 10;
	printf("%5s %8s %-5s %-17s %6s %8s %10s %10s %10s", "idx", "pid", "alive", "role", "leases", "active",
	       "sent", "received", "acked");
	eol(w);
	for (unsigned i = 0; i < nparts && i < s->records; i++) {
		const struct shmq_participant_info *p = &w->parts[i];
		if (rows && used + 2 >= rows) {
			printf("  ... %u more", s->records - i);
			eol(w);
			break;
		}
		char act[32];
		age(act, sizeof(act), s->now_ms, p->last_active_ms);
		printf("%5u %8d %-5s %-17s %6u %8s %10llu %10llu %10llu", p->index, p->pid,
		       p->alive == 1   ? "yes"
		       : p->alive == 0 ? "no"
				       : "?",
		       p->role, p->leases, act, (unsigned long long)p->sent, (unsigned long long)p->received,
		       (unsigned long long)p->acked);
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
