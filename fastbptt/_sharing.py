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
call in, ``end`` counts it out. On the cache, ``_readers`` is a list with one item per backward
reading it and ``_alone`` is there while a call has it alone. These take no lock: a reader
appends itself and then looks for ``_alone``, a call wanting the cache alone sets ``_alone``
(``dict.setdefault``) and then looks for readers, each of these one operation that no other
thread can interleave with (the GIL), so of a reader and a writer starting together at least one
sees the other and is refused, never neither. The caller's arrays that calls write are claimed
in ``_claimed`` under a lock (only calls that write such arrays pay for it).
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


def _in_use(cache):
    return InUseError(
        f"this {cache.cell} cache is in use by a call in another thread; a forward with "
        "out=cache or a backward with overwrite_cache=True needs the cache alone (give each "
        "thread its own cache: forward without out=)")


def begin(cache, mode, writes=()):
    """Count a call in before it reads or writes anything, or raise.

    cache : the cache the call runs on (a forward's ``out=``), or None (a forward making a new
        cache: nothing to count).
    mode : 'read' (a backward without overwrite_cache), 'consume' (with it) or 'refill' (a
        forward with out=); the last two write the cache and need it alone.
    writes : (name, array) pairs, the caller's arrays that the call writes.

    A consumed cache is refused to 'read' and 'consume' with a ValueError here, once the call
    is counted in, so that of two backward calls with overwrite_cache on one cache one runs and
    the other is refused. Returns whether the call may use the cache's workspaces: False where
    another call is reading the cache. Pair with ``end``.

    The common case, a backward reading a cache and writing only new arrays, comes first and
    in few steps: this runs on every backward, right after a kernel has left the processor's
    caches cold."""
    if mode == "read" and not writes:
        fields = cache.__dict__
        readers = fields["_readers"]
        readers.append(None)
        if "_alone" not in fields and not fields["consumed"]:
            return len(readers) == 1
        readers.pop()
    return _begin(cache, mode, writes)


def _begin(cache, mode, writes):
    """``begin`` for every other case, and the refusals."""
    shared = True
    if cache is not None:
        fields = cache.__dict__
        readers = fields["_readers"]
        if mode == "read":
            readers.append(None)
            if "_alone" in fields or fields["consumed"]:
                readers.pop()
                if "_alone" in fields:
                    raise _in_use(cache)
                raise ValueError(cache._consumed_message())
            shared = len(readers) == 1
        else:
            me = object()
            if fields.setdefault("_alone", me) is not me:
                raise _in_use(cache)
            if readers or (fields["consumed"] and mode == "consume"):
                del fields["_alone"]
                if readers:
                    raise _in_use(cache)
                raise ValueError(cache._consumed_message())
    if writes:
        try:
            with _lock:
                if _claimed:
                    _check_free(writes)
                for pair in writes:
                    _claimed[id(pair[1])] = pair
        except InUseError:
            _uncount(cache, mode)
            raise
    return shared


def _uncount(cache, mode):
    if cache is None:
        return
    if mode == "read":
        cache.__dict__["_readers"].pop()
    else:
        del cache.__dict__["_alone"]


def _check_free(writes):
    """InUseError if one of ``writes`` shares memory with an array another call writes."""
    for name, arr in writes:
        for other, claimed in _claimed.values():
            if np.may_share_memory(arr, claimed):
                raise InUseError(
                    f"{name} is being written by a call in another thread (as {other}); two "
                    "calls writing one array at once would lose updates: give each thread its "
                    "own gradient buffers and add them up afterwards")


def end(cache, mode, writes=(), refill_failed=False):
    """The end of a call counted by ``begin`` (the same ``mode``). ``refill_failed``: a forward
    with out=cache stopped half-way (interrupted, or an error): the cache is left consumed, so
    that no backward reads a half-written cache."""
    if mode == "read" and not writes:           # the common case, as in begin
        cache.__dict__["_readers"].pop()
        return
    if writes:
        with _lock:
            for pair in writes:
                _claimed.pop(id(pair[1]), None)
    if refill_failed:
        cache._consume("interrupted")
    if mode == "read":
        cache.__dict__["_readers"].pop()
    else:
        del cache.__dict__["_alone"]


def refilling(out, writes, fill, *args):
    """``fill(*args)``, the work of a forward, with ``out`` (the cache it refills, or None)
    counted in as a call that needs it alone (``begin``) for the while, and out again even
    where ``fill`` raised: a cache left half-written is then consumed (``end``)."""
    if out is None:
        return fill(*args)
    begin(out, "refill", writes)
    done = False
    try:
        result = fill(*args)
        done = True
    finally:
        end(out, "refill", writes, refill_failed=not done)
    return result
