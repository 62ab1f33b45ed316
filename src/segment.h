/* SPDX-License-Identifier: MIT */
/* segment.c: naming, formatting, mapping and validating a segment; reading one as an image. */
#ifndef SHMQ_SEGMENT_H
#define SHMQ_SEGMENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "handle.h"
#include "layout.h"
#include "shmq.h"

SHMQ_HIDDEN int shmq_normalize_name(const char *name, char *out, size_t outsz);
/* shm_open(n, flags | O_CLOEXEC) of an object that must be a regular file (a segment), its fstat in
 * *st: the fd, or -errno: -EISDIR for a directory, -ELOOP for a symbolic link (shm_open does not
 * follow one), -EPROTO for another file type. */
struct stat;
SHMQ_HIDDEN int shmq_shm_open_regular(const char *n, int flags, struct stat *st);
/* the config a header records (read from a validated copy) */
SHMQ_HIDDEN void shmq_hdr_config(const struct shmq_hdr *h, struct shmq_config *c);
/* Bytes of a segment for a valid cfg, and its formatting: base must hold that many zeroed bytes
 * (a fresh shm object, or a test's or fuzzer's buffer). Writes the magic last. */
SHMQ_HIDDEN uint64_t shmq_segment_size(const struct shmq_config *cfg);
SHMQ_HIDDEN void shmq_format(void *base, const struct shmq_config *cfg);
SHMQ_HIDDEN int shmq_validate_header(const struct shmq_hdr *h, uint64_t file_size);
SHMQ_HIDDEN int shmq_header_check(const struct shmq_hdr *h, uint64_t file_size, shmq_hdr_report_fn fn,
				  void *ctx);
/* A segment opened and validated (magic, version, sizes against fstat); hdr is a private copy of
 * its header, the only one bounds may come from. */
struct shmq_mapping {
	int fd;
	unsigned char *base;
	uint64_t size;
	struct shmq_hdr hdr;
	char name[SHMQ_NAME_MAX + 2];
};
/* writable 0: O_RDONLY + PROT_READ (inspection). trust: refuse (-EPERM) an object it does not
 * accept (struct shmq_open_options), before reading any of it; NULL: no owner check (inspection,
 * which writes nothing, may read any queue it can open). */
SHMQ_HIDDEN int shmq_map_segment(const char *name, int writable, const struct shmq_open_options *trust,
				 struct shmq_mapping *m);

/* Lane l's ticket counter `field` (prod_tail, cons_head) of the segment at base, read through its
 * own 8-byte alignment: an image handed to a view need not be aligned like struct shmq_hdr (64). */
#define LANE_LOAD(base, l, field)                                                                            \
	atomic_load_explicit((const _Atomic uint64_t *)((const unsigned char *)(base) +                      \
							offsetof(struct shmq_hdr, lane) +                    \
							(size_t)(l) * sizeof(struct shmq_lane) +             \
							offsetof(struct shmq_lane, field)),                  \
			     memory_order_acquire)
/* Retired counter k of the header (see struct shmq_hdr), read like LANE_LOAD. */
#define RETIRED_LOAD(base, k)                                                                                \
	atomic_load_explicit((const _Atomic uint64_t *)((const unsigned char *)(base) +                      \
							offsetof(struct shmq_hdr, retired) +                 \
							(size_t)(k) * sizeof(uint64_t)),                     \
			     memory_order_relaxed)
/* the alignment an image needs: that of the slot and participant records */
#define SHMQ_IMAGE_ALIGN 8u

#endif
