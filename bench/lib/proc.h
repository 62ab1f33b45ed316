/* SPDX-License-Identifier: MIT */
/*
 * proc.h: the processes of one measurement, and what they cost.
 *
 * A proc_group is a set of children forked for one measurement. Each child is pinned (when asked),
 * dies with the parent (PR_SET_PDEATHSIG), sets itself up, calls proc_ready(), then proc_wait_go()
 * blocks until the parent calls proc_go(): every child starts the measured part at the same moment,
 * after all of them are set up. The parent waits for the group with a deadline (a hung child is
 * killed, not waited for) and gets each child's exit status and rusage (CPU time, peak RSS) from
 * wait4().
 *
 * The parent must call proc_parent_init() first: it blocks SIGCHLD, SIGINT, SIGTERM and SIGHUP, so
 * that they are only taken in proc_wait_ready()/proc_wait()/proc_sleep_until() (which then return
 * -EINTR and proc_interrupted() names the signal), and kills every live child at exit. Children get
 * the default handlers and an empty signal mask back.
 */
#ifndef SHMQ_BENCH_PROC_H
#define SHMQ_BENCH_PROC_H

#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#define PROC_MAX 8

struct proc_child {
	pid_t pid;
	int done;
	int status; /* from wait4, valid when done */
	struct rusage ru;
};

struct proc_group {
	int n;
	struct proc_child c[PROC_MAX];
	int ready_rd, ready_wr, go_rd, go_wr;
	int nready;
};

uint64_t now_ns(void); /* CLOCK_MONOTONIC */

/* Pins the calling thread to one CPU; cpu < 0 does nothing. 0 or -errno. */
int proc_pin(int cpu);

/* user + system CPU seconds of the calling process so far */
double proc_self_cpu_s(void);

/* CPU nanoseconds used by process pid so far (/proc/PID/schedstat, else /proc/PID/stat at tick
 * resolution), or -errno. */
int64_t proc_cpu_ns(pid_t pid);

/* Busy and total time of the whole machine (/proc/stat): load_other() turns two marks and our own
 * CPU seconds meanwhile into how many CPUs other processes kept busy (the machine may be shared). */
struct load_mark {
	unsigned long long busy, total;
	uint64_t t_ns;
};
struct load_mark load_mark(void);
double load_other(struct load_mark start, double own_cpu_s); /* CPUs; -1 when unknown */

void proc_parent_init(void);
/* the signal that interrupted a wait (SIGINT, SIGTERM, SIGHUP), 0 if none */
int proc_interrupted(void);

/* 0 or -errno (pipe) */
int proc_group_init(struct proc_group *g);
/* Forks a child pinned to cpu (< 0: not pinned) that runs fn(arg) and _exits with its return value
 * (a failed pin exits 126 before fn runs). Returns the pid or -errno. */
pid_t proc_spawn(struct proc_group *g, int cpu, int (*fn)(void *arg), void *arg);
/* In a child: set up, ready to go. */
void proc_ready(void);
/* In a child: blocks until the parent calls proc_go() (0), or -EPIPE if the parent is gone. */
int proc_wait_go(void);
/* Waits until every child called proc_ready(). 0, -ETIMEDOUT, -ECHILD (a child exited first),
 * -EINTR (see proc_interrupted). */
int proc_wait_ready(struct proc_group *g, uint64_t deadline_ns);
void proc_go(struct proc_group *g);
/* Waits until every child exited, or the deadline. 0, -ETIMEDOUT, -EINTR. */
int proc_wait(struct proc_group *g, uint64_t deadline_ns);
/* Sleeps until t_ns (CLOCK_MONOTONIC), reaping nothing. 0 or -EINTR. */
int proc_sleep_until(uint64_t t_ns);
/* SIGKILLs and reaps the children still running, closes the group's pipes. Always safe. */
void proc_group_end(struct proc_group *g);
/* SIGKILLs every live child of every group (async-signal-safe; for exit paths). */
void proc_kill_all(void);

#endif
