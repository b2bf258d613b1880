"""The Lua scripts, shipped as package resources (lua/<name>.lua), and their registration on a client.

Each script reads and checks first, then writes; none does arithmetic of its own (values arrive as the exact strings
Python wrote: Redis parses scores with strtod, so floats round-trip exactly, and Lua's numbers would print a 15-digit
unit count as 1e+15). An error after a script's first write would leave it half done, so every argument a write
takes is formed in Python and well-formed by construction (negative counts included: Redis refuses "-0").
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Final, Literal

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

ScriptName = Literal[
    "record_many",
    "park",
    "lease",
    "release",
    "renew",
    "mark_sent_many",
    "mark_retry",
    "mark_rejected",
    "requeue",
    "send_many",
    "reject_sent",
    "set_cursor",
    "record_correction",
]

# The member every queue holds at +inf to stay a skiplist (lua/anchored.lua says why); the same string as there.
ANCHOR: Final = "\x00anchor: a member over 64 bytes keeps this sorted set a skiplist in Redis; never an event id"

# The scripts that add to a queue, and so begin with lua/anchored.lua's `anchor` and `zadd`.
_ANCHORED: Final[frozenset[ScriptName]] = frozenset({"record_many", "lease", "release", "mark_retry", "requeue"})
# The scripts that count units per customer and hour, and so begin with lua/windows.lua's `count`.
_WINDOWED: Final[frozenset[ScriptName]] = frozenset({"mark_sent_many", "mark_rejected", "requeue", "reject_sent"})
_PACKAGE: Final = __name__.rpartition(".")[0]


@cache
def source(name: ScriptName) -> str:
    """The Lua text of script `name`, after the preludes it uses: the anchor's (scripts that add to a queue) and the
    hour counters' (scripts that count units per customer and hour)."""
    preludes = [prelude for prelude, users in (("anchored", _ANCHORED), ("windows", _WINDOWED)) if name in users]
    return "".join(_read(prelude) for prelude in preludes) + _read(name)


def register(client: Redis, name: ScriptName) -> AsyncScript:
    """Script `name` on `client`: EVALSHA, loading the script first on a server that does not know it."""
    return client.register_script(source(name))


def _read(name: str) -> str:
    return files(_PACKAGE).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
