/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the read-only view and the checker: every image it makes goes through
 * shmq_view_image, shmq_view_snapshot, shmq_view_slot on every slot and shmq_check_image (or,
 * put in /dev/shm, through shmq_view_open and shmq_check_name).
 *
 * A valid segment is ~266 KB (the participant records alone are 256 KiB), far beyond what a
 * fuzzer grows an input to, so the input is a recipe rather than the image itself:
 *
 *   byte 0, bit 0 clear: raw mode, the rest of the input is the image (foreign, truncated, tiny);
 *   byte 0, bit 0 set:   built mode, byte 1 picks a small config (capacity 2..16, slot size
 *                        128..320, 1 or 2 lanes), a fresh segment is formatted for it (shmq_format, as
 *                        shmq_create does), then the remaining bytes are edit ops (see apply()).
 *
 * Bits 1-6 of byte 0 shift the image by that many bytes from malloc's alignment: a multiple of 8
 * must work like 0 (an image need not be aligned like struct shmq_hdr), any other shift must be
 * refused with -EINVAL. The final image is copied into a buffer of exactly its length (plus the
 * shift), so ASan sees any read past it. Bit 7 instead writes the image to /dev/shm and reads
 * it through shmq_view_open and shmq_check_name, the live paths.
 * tests/fuzz/mkcorpus.sh writes the seed corpus in this format.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "shmq_inspect.h"

struct input {
	const uint8_t *p;
	size_t n;
};

/* The next k bytes (k <= 8) little-endian; missing bytes read as 0. */
static uint64_t take(struct input *in, unsigned k)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < k && in->n; i++, in->p++, in->n--)
		v |= (uint64_t)*in->p << (8 * i);
	return v;
}

/* Copies up to len input bytes to dst (never past end). */
static void patch(unsigned char *dst, const unsigned char *end, struct input *in, unsigned len)
{
	for (unsigned i = 0; i < len && dst + i < end && in->n; i++)
		dst[i] = (unsigned char)take(in, 1);
}

/* The image being built. Its regions come from the config, never from the header, which the
 * ops may have overwritten. */
struct built {
	unsigned char *img, *parts, *slots;
	uint64_t size, len;
	const struct shmq_config *c;
};

/* One edit op: the low 3 bits of the op byte say what, the next 3 bits a length 1..8 for patches. */
static void apply(struct built *b, uint8_t op, struct input *in)
{
	unsigned char *img = b->img, *slots = b->slots, *parts = b->parts;
	const unsigned char *end = img + b->size;
	const struct shmq_config *c = b->c;
	struct shmq_hdr *h = (struct shmq_hdr *)img;
	unsigned n = ((op >> 3) & 7) + 1;
	switch (op & 7) {
	case 0: /* header bytes */
		patch(img + take(in, 2) % sizeof(struct shmq_hdr), end, in, n);
		break;
	case 1: /* slot header or payload bytes */
	{
		uint64_t s = take(in, 1) % c->capacity;
		patch(slots + s * c->slot_size + take(in, 2) % c->slot_size, end, in, n);
		break;
	}
	case 2: /* participant record bytes */
	{
		uint64_t r = take(in, 2) % SHMQ_MAX_PARTICIPANTS;
		patch(parts + r * SHMQ_PART_SIZE + take(in, 1) % SHMQ_PART_SIZE, end, in, n);
		break;
	}
	case 3: /* anywhere */
		patch(img + take(in, 4) % b->size, end, in, n);
		break;
	case 4: /* a whole slot word from its fields: ticket = lap * capacity + slot */
	{
		uint64_t s = take(in, 1) % c->capacity;
		unsigned st = (unsigned)take(in, 1), own = (unsigned)take(in, 2), d = (unsigned)take(in, 1);
		uint64_t t = take(in, 1) * c->capacity + s;
		struct shmq_slot *sl = (struct shmq_slot *)(slots + s * c->slot_size);
		atomic_store(&sl->word, w_make(t, st, own, d));
		break;
	}
	case 5: /* ticket counters */
		atomic_store(&h->lane[0].prod_tail, take(in, 2));
		atomic_store(&h->lane[0].cons_head, take(in, 2));
		break;
	case 6: /* truncate or grow (zero-filled) */
		b->len = take(in, 4) % (b->size + 8192);
		break;
	case 7: /* one of the first records claimed, with one counter set */
	{
		struct shmq_participant *p =
			(struct shmq_participant *)(parts + take(in, 1) % 8 * SHMQ_PART_SIZE);
		atomic_store(&p->state, PART_ALIVE | take(in, 1) << 8);
		p->pid = (int32_t)take(in, 1) + 1;
		unsigned k = (unsigned)take(in, 1) % C_COUNT;
		atomic_store(&p->counters[k], take(in, 2));
		break;
	}
	}
}

static void on_finding(void *ctx, int severity, const char *what)
{
	/* a message must be a terminated string: strlen reads all of it under ASan */
	*(size_t *)ctx += strlen(what) + (unsigned)severity;
}

/* What a tool reads through a view: the snapshot, then every slot with its payload. */
static void read_view(shmq_view_t *v)
{
	struct shmq_snapshot s;
	struct shmq_participant_info parts[8];
	if (shmq_view_snapshot(v, &s, parts, 8) < 0)
		abort();
	uint32_t cap = s.stats.config.capacity;
	void *buf = malloc(s.stats.max_payload);
	if (!buf)
		abort();
	for (uint32_t i = 0; i < cap; i++) {
		struct shmq_slot_info si;
		if (shmq_view_slot(v, i, &si, buf, s.stats.max_payload) != 0 || si.len > s.stats.max_payload)
			abort();
		(void)shmq_slot_kind_str(si.kind);
	}
	struct shmq_slot_info si;
	if (shmq_view_slot(v, cap, &si, NULL, 0) != -EINVAL)
		abort();
	free(buf);
}

static void inspect(const unsigned char *img, size_t len)
{
	shmq_view_t *v = NULL;
	if ((uintptr_t)img % 8) {
		if (shmq_view_image(img, len, &v) != -EINVAL ||
		    shmq_check_image(img, len, NULL, NULL) != -EINVAL)
			abort();
		return;
	}
	if (shmq_view_image(img, len, &v) == 0) {
		read_view(v);
		shmq_view_close(v);
	}
	size_t sum = 0;
	if (shmq_check_image(img, len, on_finding, &sum) < 0)
		abort();
}

/* The image img[0..len) (zero-filled past have) as a segment in /dev/shm, read through
 * shmq_view_open and shmq_check_name: the paths of `shmq stat` and `shmq check`. */
static void inspect_live(const unsigned char *img, uint64_t have, uint64_t len)
{
	uint64_t magic = 0;
	memcpy(&magic, img, have < sizeof(magic) ? have : sizeof(magic));
	/* open gives a creator half a second to finish an object that is shorter than a header or
	 * has no magic yet: not worth fuzzing at that price */
	if (len < SHMQ_HDR_SIZE || !magic)
		return;
	char name[64];
	snprintf(name, sizeof(name), "/shmq-fuzz-%d", (int)getpid());
	int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return;
	uint64_t n = len < have ? len : have, done = 0;
	ssize_t w = 0;
	if (ftruncate(fd, (off_t)len) == 0)
		while (done < n && (w = pwrite(fd, img + done, n - done, (off_t)done)) > 0)
			done += (uint64_t)w;
	if (done == n) {
		shmq_view_t *v = NULL;
		if (shmq_view_open(name, &v) == 0) {
			read_view(v);
			shmq_view_close(v);
		}
		size_t sum = 0;
		if (shmq_check_name(name, on_finding, &sum) < 0)
			abort();
	}
	close(fd);
	shm_unlink(name);
}

/* The image img[0..len) copied to a buffer of exactly that length, shifted by `shift` bytes
 * from malloc's alignment (callers' buffers are not always aligned), then inspected. */
static void inspect_copy(const unsigned char *img, uint64_t have, uint64_t len, unsigned shift)
{
	unsigned char *buf = calloc(1, shift + len); /* ASan's malloc(0) is a valid, empty block */
	if (!buf)
		return;
	memcpy(buf + shift, img, len < have ? len : have);
	inspect(buf + shift, len);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size};
	unsigned mode = (unsigned)take(&in, 1), shift = (mode >> 1) & 63;
	if (!(mode & 1)) {
		if (mode & 0x80)
			inspect_live(in.p, in.n, in.n);
		else
			inspect_copy(in.p, in.n, in.n, shift);
		return 0;
	}
	struct shmq_config c;
	shmq_config_init(&c);
	uint8_t cb = (uint8_t)take(&in, 1);
	c.capacity = 2u << (cb & 3);
	c.slot_size = 128 + 64 * ((cb >> 2) & 3);
	c.max_deliveries = 1 + ((cb >> 4) & 3);
	c.lanes = c.capacity >= 4 ? 1 + ((cb >> 6) & 1) : 1; /* each lane needs 2 slots */
	struct built b = {.size = shmq_segment_size(&c), .c = &c};
	b.len = b.size;
	b.img = calloc(1, b.size);
	if (!b.img)
		return 0;
	shmq_format(b.img, &c);
	b.parts = b.img + SHMQ_HDR_SIZE;
	b.slots = b.img + b.size - (uint64_t)c.capacity * c.slot_size;
	while (in.n)
		apply(&b, (uint8_t)take(&in, 1), &in);
	if (mode & 0x80)
		inspect_live(b.img, b.size, b.len);
	else
		inspect_copy(b.img, b.size, b.len, shift);
	free(b.img);
	return 0;
}
