"""Least privilege: once its sockets are open, the exporter keeps only the capabilities it
still needs, and can never gain any back (no_new_privs, bounding set).

CAP_NET_RAW stays because interfaces come and go and each new one needs a packet socket;
CAP_SYS_ADMIN stays only with --netns, where opening those sockets (and reopening netlink)
inside another namespace needs setns. Everything else goes from the effective, permitted,
inheritable, ambient and bounding sets. Capabilities are per thread in Linux: this must run
while the process has one thread, and every thread started later inherits the reduced sets.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

CAP_SETPCAP = 8
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_VERSION_3 = 0x20080522  # 64-bit sets, as two 32-bit words


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc = ctypes.CDLL(None, use_errno=True)


class PrivilegeDropError(Exception):
    """The capabilities could not be reduced; the message names the step."""


def needed(netns: bool) -> frozenset[int]:
    return frozenset({CAP_NET_RAW, CAP_SYS_ADMIN} if netns else {CAP_NET_RAW})


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def sets() -> tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) as 64-bit masks."""
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")

    def mask(name: str) -> int:
        return int(getattr(data[0], name)) | int(getattr(data[1], name)) << 32

    return mask("effective"), mask("permitted"), mask("inheritable")


def drop(keep: Iterable[int]) -> None:
    """Keeps only `keep` (those of them the process has), none inheritable; no_new_privs.

    Without CAP_SETPCAP (not root) the bounding set cannot shrink; no_new_privs still stops
    an exec from gaining anything.
    """
    if threads() != 1:
        raise PrivilegeDropError(f"{threads()} threads: capabilities are per thread")
    mask = sum(1 << cap for cap in keep)
    effective, permitted, _ = sets()
    if effective >> CAP_SETPCAP & 1:
        for cap in range(_last_cap() + 1):
            if not mask >> cap & 1 and _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1:
                _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "PR_CAPBSET_DROP")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "PR_CAP_AMBIENT")
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()
    for word in (0, 1):
        shift = 32 * word
        data[word].effective = (effective & mask) >> shift & 0xFFFFFFFF
        data[word].permitted = (permitted & mask) >> shift & 0xFFFFFFFF
        data[word].inheritable = 0  # nothing this process runs is to inherit any
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


def own_pool(loop: asyncio.AbstractEventLoop) -> ThreadPoolExecutor:
    """The loop's default thread pool (getaddrinfo runs there), made ours to shut down."""
    pool = ThreadPoolExecutor()
    loop.set_default_executor(pool)
    return pool


def drop_with_pool(
    loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor, keep: Iterable[int]
) -> None:
    """drop() with the loop's pool emptied first; its next threads start from the reduced sets."""
    pool.shutdown(wait=True)
    loop.set_default_executor(ThreadPoolExecutor())
    drop(keep)


def _last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _check(result: int, what: str) -> None:
    if result != 0:
        raise PrivilegeDropError(f"{what}: {os.strerror(ctypes.get_errno())}")
