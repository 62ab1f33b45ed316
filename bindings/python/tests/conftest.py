# SPDX-License-Identifier: MIT
import itertools
import os

import pytest

import shmq

_seq = itertools.count()


@pytest.fixture
def qname(request):
    """A queue name of this test's own, unlinked after it."""
    name = f"pytest-{os.getpid()}-{next(_seq)}-{request.node.name[:60]}"
    yield name
    try:
        shmq.unlink(name)
    except shmq.ShmqError:
        pass


@pytest.fixture
def queue(qname):
    with shmq.Queue.create(qname, capacity=64, lease_ms=30000) as q:
        yield q
