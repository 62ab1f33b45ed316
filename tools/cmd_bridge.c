/* SPDX-License-Identifier: MIT */
/* cmd_bridge.c: `shmq bridge ...` runs shmq-bridge, a binary of its own so that neither libshmq nor
 * this tool links libnats: the one next to this executable, else the one on PATH. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cmd_bridge(int argc, char **argv)
{
	(void)argc;
	char self[PATH_MAX], path[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	argv[0] = "shmq-bridge";
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(path, sizeof(path), "%s/shmq-bridge", self);
			if (!access(path, X_OK))
				execv(path, argv);
		}
	}
	execvp("shmq-bridge", argv);
	return cli_error(CLI_FAIL, "bridge",
			 "cannot run shmq-bridge: %s (make builds it; make install installs it)",
			 strerror(errno));
}
