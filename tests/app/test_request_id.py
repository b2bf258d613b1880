"""Fresh request ids: 128 random bits each, drawn from the OS in pools, never handed out twice."""

from __future__ import annotations

import os
import re

from gateway.app.request_id import _RandomIds, request_id_from


def test_fresh_ids_are_32_hex_digits_and_distinct_across_several_pools() -> None:
    ids = _RandomIds()

    drawn = [ids.next() for _ in range(3 * _RandomIds.IDS_PER_DRAW + 5)]

    assert all(re.fullmatch(r"[0-9a-f]{32}", one) for one in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_request_without_a_sane_id_gets_a_fresh_one_each_time() -> None:
    assert request_id_from([]) != request_id_from([(b"x-request-id", b"bad id with spaces")])


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    ids = _RandomIds()
    ids.next()  # the pool is drawn: the parent's next ids are fixed now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, ids.next().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    in_child = os.read(read, 64).decode()
    os.close(read)

    assert in_child != ids.next()
