"""What calls running at once in several threads may share, checked as each call starts.

The kernels release the GIL, so Python threads run calls side by side, and a call must never
give a wrong answer because another one runs. The rules:

- What a call only reads (x, the weights, the states, dh, xi) any number of calls may share.
- A cache may be read by any number of backward calls at once (without ``overwrite_cache``).
  The kernels keep their workspace on the cache; a backward that finds another one running on
  the cache makes a workspace of its own for the call (``shared`` False below).
- A call that writes a cache, a forward with ``out=cache`` or a backward with
  ``overwrite_cache=True``, needs the cache alone: it is refused while another call runs on the
  cache, and so is any call on the cache while it runs.
- The caller's arrays that a call writes (``grads=``, which it adds into, ``out=``,
  ``h_grad_norms``) belong to that call until it returns: another call writing memory that
  overlaps them is refused (two backward calls adding into one ``grads`` would lose updates).

A refused call raises ``InUseError`` before it reads or writes anything. ``begin`` counts a
call in (on the cache's ``_users``: the number of backward calls reading it, or -1 for a call
that has it alone) and claims its written arrays, under one lock; ``end`` undoes both.
"""
import threading

import numpy as np


class InUseError(RuntimeError):
    """A call needs a cache or an array that a call running in another thread is using: a
    forward with ``out=cache`` or a backward with ``overwrite_cache=True`` needs the cache alone,
    and an array a call writes (``grads=``, ``out=``, ``h_grad_norms``) is that call's until it
    returns. Give each thread its own caches and gradient buffers (and add the gradients up
    afterwards)."""


_lock = threading.Lock()
_claimed = {}        # id(array) -> (name, array): the caller's arrays that running calls write


def begin(cache, mode, writes=()):
    """Count a call in before it reads or writes anything, or raise.

    cache : the cache the call runs on (a forward's ``out=``), or None (a forward making a new
        cache: nothing to count).
    mode : 'read' (a backward without overwrite_cache), 'consume' (with it) or 'refill' (a
        forward with out=); the last two write the cache and need it alone.
    writes : (name, array) pairs, the caller's arrays that the call writes.

    A consumed cache is refused to 'read' and 'consume' with a ValueError here, under the lock,
    so that of two backward calls with overwrite_cache on one cache one runs and the other is
    refused. Returns whether the call may use the cache's workspaces: False where another call
    is reading the cache. Pair with ``end``."""
    if cache is None and not writes:
        return True
    users = 0
    with _lock:
        if cache is not None:
            fields = cache.__dict__
            users = fields["_users"]
            if users < 0 or (users and mode != "read"):
                raise InUseError(
                    f"this {cache.cell} cache is in use by a call in another thread; a forward "
                    "with out=cache or a backward with overwrite_cache=True needs the cache "
                    "alone (give each thread its own cache: forward without out=)")
            if fields["consumed"] and mode != "refill":
                raise ValueError(cache._consumed_message())
        if writes and _claimed:
            _check_free(writes)
        if cache is not None:
            fields["_users"] = users + 1 if mode == "read" else -1
        for pair in writes:
            _claimed[id(pair[1])] = pair
    return users == 0


def _check_free(writes):
    """InUseError if one of ``writes`` shares memory with an array another call writes."""
    for name, arr in writes:
        for other, claimed in _claimed.values():
            if np.may_share_memory(arr, claimed):
                raise InUseError(
                    f"{name} is being written by a call in another thread (as {other}); two "
                    "calls writing one array at once would lose updates: give each thread its "
                    "own gradient buffers and add them up afterwards")


def end(cache, writes=(), refill_failed=False):
    """The end of a call counted by ``begin``. ``refill_failed``: a forward with out=cache
    stopped half-way (interrupted, or an error): the cache is left consumed, so that no backward
    reads a half-written cache."""
    if cache is None and not writes:
        return
    with _lock:
        if cache is not None:
            fields = cache.__dict__
            users = fields["_users"]
            fields["_users"] = users - 1 if users > 0 else 0
            if refill_failed:
                cache._consume("interrupted")
        for pair in writes:
            _claimed.pop(id(pair[1]), None)
