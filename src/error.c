/* SPDX-License-Identifier: MIT */
/* error.c: static texts for the errors the library returns. */
#include <errno.h>

#include "shmq.h"

const char *shmq_strerror(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return "success";
	case EINVAL:
		return "invalid argument (name, config or handle)";
	case EEXIST:
		return "a queue with this name already exists";
	case ENOENT:
		return "no such queue";
	case ENAMETOOLONG:
		return "queue name too long";
	case EAGAIN:
		return "no message or no space within the timeout";
	case EMSGSIZE:
		return "message larger than the queue's maximum payload";
	case ESTALE:
		return "lease lost: the message was requeued or settled by someone else";
	case EPROTO:
		return "not a shmq segment, or a corrupted or truncated one";
	case EPROTONOSUPPORT:
		return "segment made by an incompatible shmq layout version";
	case EUSERS:
		return "too many processes attached to this queue";
	case EPERM:
		return "the queue belongs to another user or is writable by every user: not opened unless "
		       "its owner or group is trusted";
	case EACCES:
		return "permission denied";
	case ENOSPC:
		return "no space left in /dev/shm (a tmpfs: make it bigger with docker run --shm-size, a "
		       "Kubernetes emptyDir sizeLimit, or mount -o remount,size=... /dev/shm)";
	case ENOMEM:
		return "out of memory";
	case EXDEV:
		return "the queue was created in another time namespace: all participants must share one "
		       "(their CLOCK_MONOTONIC differ)";
	case ETIMEDOUT:
		return "timed out";
	case EISDIR:
		return "a directory, not a queue";
	case ELOOP:
		return "a symbolic link, not a queue (shm_open does not follow one)";
	case ECHILD:
		return "handle inherited across fork: a child must open the queue itself";
	default:
		return "unexpected system error";
	}
}
