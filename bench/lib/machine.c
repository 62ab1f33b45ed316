/* SPDX-License-Identifier: MIT */
/*
 * machine.c: the machine description printed with every result (see machine.h).
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "lib/machine.h"

int machine_probe(struct machine *m)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->cpu_model, sizeof(m->cpu_model), "unknown");
	struct utsname u;
	if (!uname(&u)) {
		snprintf(m->kernel, sizeof(m->kernel), "%s %s %s", u.sysname, u.release, u.version);
		snprintf(m->arch, sizeof(m->arch), "%s", u.machine);
	}
	m->online = sysconf(_SC_NPROCESSORS_ONLN);
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f) {
		char line[512];
		while (fgets(line, sizeof(line), f)) {
			char *p = strchr(line, ':');
			if (strncmp(line, "model name", 10) || !p)
				continue;
			p += strspn(p + 1, " \t") + 1;
			p[strcspn(p, "\n")] = 0;
			snprintf(m->cpu_model, sizeof(m->cpu_model), "%s", p);
			break;
		}
		fclose(f);
	}
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set))
		return -errno;
	for (int c = 0; c < CPU_SETSIZE && m->usable < MACHINE_CPUS_MAX; c++)
		if (CPU_ISSET(c, &set))
			m->cpu[m->usable++] = c;
	return 0;
}

/* does the sysfs cpu list (e.g. "0-3,8") contain cpu? */
static int list_has(const char *s, int cpu)
{
	while (*s) {
		char *end;
		long lo = strtol(s, &end, 10), hi = lo;
		if (end == s)
			return 0;
		if (*end == '-')
			hi = strtol(end + 1, &end, 10);
		if (cpu >= lo && cpu <= hi)
			return 1;
		s = *end == ',' ? end + 1 : end;
		if (*s == '\n')
			break;
	}
	return 0;
}

static int read_line(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int ok = fgets(buf, (int)n, f) != NULL;
	fclose(f);
	if (!ok)
		return -1;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

void machine_shared_caches(int a, int b, char *out, size_t n)
{
	size_t len = 0;
	int found = 0;
	out[0] = 0;
	for (int i = 0; i < 16; i++) {
		char path[128], level[16], type[32], list[256];
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/cache/index%d/level", a, i);
		if (read_line(path, level, sizeof(level)))
			break;
		found = 1;
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/cache/index%d/type", a, i);
		if (read_line(path, type, sizeof(type)))
			snprintf(type, sizeof(type), "Unified");
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/cache/index%d/shared_cpu_list", a,
			 i);
		if (read_line(path, list, sizeof(list)) || !list_has(list, b))
			continue;
		const char *suffix = !strcmp(type, "Data") ? "d" : !strcmp(type, "Instruction") ? "i" : "";
		int k = snprintf(out + len, n - len, "%sL%s%s", len ? " " : "", level, suffix);
		if (k > 0 && (size_t)k < n - len)
			len += (size_t)k;
	}
	if (!found)
		snprintf(out, n, "unknown");
	else if (!len)
		snprintf(out, n, "none");
}
