"""Data-parallel training on a Dask cluster (``dask.distributed``), and sweeps of runs on it.

Synchronous data parallelism: each worker of the cluster holds a replica of the model (a Dask
actor), with its own optimizer, and serves a contiguous shard of the batch's streams
(``fastbptt.nn.data.Streams(..., rows=...)``). The recurrent state of a stream stays on the
replica that owns it, so truncated BPTT carries it from window to window as on one machine. At
every step each replica runs forward and backward on its shard with the kernels and scales its
gradient by its share of the batch (n_r / N: the mean loss over the whole batch is the weighted
sum of the shards' means); the replicas then sum their gradients among themselves, worker to
worker, by recursive doubling (a butterfly: log2(R) rounds of pairwise exchanges, R replicas),
never through the client: over sockets of their own between workers on one machine, through
Dask's comms otherwise. Every replica clips the sum by global norm and applies it with its
optimizer. IEEE addition is commutative, so both ends of each exchange compute the same bits and
the replicas stay bit-identical. With the same global batch, seed and data order the parameters
equal those of single-process training to rounding (float64: 1e-10 relative); only the order of
the sums differs.

``sync_every=k > 1`` communicates less: each replica takes k local steps on its shard (its own
clipping and optimizer state) and then the replicas average their parameters (local SGD, model
averaging). That is not single-process training, and it converges differently; the optimizer
states are never averaged.

Each call from the client to the replicas is one message per replica (a Dask actor call: to the
worker directly, or through the scheduler where the client does not talk to workers directly)
and runs there in the order the client issued it. ``DataParallel.train`` sends the steps in
chunks of several (``chunk``, default 8), one message per replica for a chunk and one answer with
its losses, and keeps the next chunk issued while it waits for the current one, so the replicas
never wait for the client, and the client's and the workers' event loops handle a few messages
per chunk instead of per step. A chunk ends where the caller needs the replicas after a given
step (``stops``: an evaluation, a save, the last step); ``pull`` reads the parameters after
``step_count`` and is refused inside the loop anywhere else, where the replicas have gone on.
The update of step s is applied at the start of step s + 1 (or by ``pull``).

A worker that leaves the cluster takes its replica's state with it (its streams' recurrent
state, its optimizer state): the chunk of steps running fails with a ``ReplicaLostError``
naming the worker and the steps. Save the model every few steps to be able to continue
(``fastbptt train --save-every S``, then ``--resume``).

``sweep`` runs independent configurations (``fastbptt train --compare-truncation``'s three
runs) as ordinary Dask tasks, one per configuration; Dask retries a task whose worker died.

Dask is an optional dependency (``pip install 'fastbptt[dask]'``): neither the library nor the
rest of the model layer imports this module; ``fastbptt train --cluster`` imports it when asked
to. Typical use (in a script, under ``if __name__ == "__main__":``: local workers are new
processes)::

    from fastbptt.nn import Model, distributed
    client = distributed.connect("local:2")        # or "tcp://scheduler:8786", or a Client
    model = Model(V, 128, V, cell="lstm", input="onehot")
    with distributed.DataParallel(model, ids, client=client, batch=64, seq_len=64,
                                  optimizer="adam", lr=3e-3, clip=5.0) as dp:
        for loss in dp.train(1000):
            ...
        dp.pull()                                  # model.params = the replicas' parameters
"""
import asyncio
import concurrent.futures
import contextvars
import inspect
import math
import re
import secrets
import socket
import struct
import time
from collections import deque

import numpy as np

try:
    import dask
    import distributed as _dd
except ImportError as _err:              # the optional extra is missing: say which one
    raise ImportError("fastbptt.nn.distributed needs Dask's distributed scheduler: "
                      "pip install 'fastbptt[dask]'") from _err

from .. import clip as _clip
from .._threads import available_cores
from ..truncation import _count
from . import data
from .model import Model
from .optim import OPTIMIZERS

__all__ = ["connect", "worker_addresses", "DataParallel", "train", "sweep", "ReplicaLostError",
           "DASK_EXTRA"]

DASK_EXTRA = "pip install 'fastbptt[dask]'"
_LOCAL = re.compile(r"local:(\d+)\Z")
_ADDRESS = re.compile(r"(tcp|tls|ws|wss|inproc|ucx)://\S+\Z")
POLL_S = 1.0                 # how often a waiting client checks that the replicas' workers live
LOSS_GRACE_S = 3.0           # how long a failed call waits for the scheduler to see a dead worker
CHUNK = 8                    # steps per message to the replicas (DataParallel.train's default)
LINK_TIMEOUT_S = 30.0        # how long replicas on one machine wait to open their links
LINK_TOKEN_BYTES = 16        # the random token a link opens with


class ReplicaLostError(RuntimeError):
    """A worker holding a replica left the cluster (or stopped answering): its state is gone,
    so synchronous training cannot go on."""


# ------------------------------------------------------------------------------- connecting
def connect(cluster, *, timeout=30):
    """A ``distributed.Client`` for ``cluster``.

    ``cluster`` is ``"local:N"`` (start a ``LocalCluster`` of N single-threaded worker
    processes, closed with the client), a scheduler address such as ``"tcp://HOST:PORT"``
    (connect to a running cluster) or a ``Client`` (returned as it is). ``timeout`` (seconds)
    bounds the connection. Close the client when done (``client.close()``)."""
    if isinstance(cluster, _dd.Client):
        return cluster
    if not isinstance(cluster, str):
        raise TypeError(f"cluster must be 'local:N', a scheduler address or a Client, "
                        f"got {type(cluster).__name__}")
    m = _LOCAL.match(cluster)
    if m:
        n_workers = int(m.group(1))
        if n_workers < 1:
            raise ValueError(f"cluster 'local:N' needs N >= 1, got {cluster!r}")
        return _local_client(n_workers, max(1, available_cores() // n_workers), timeout)
    if not _ADDRESS.match(cluster):
        raise ValueError(f"cluster must be 'local:N' or a scheduler address "
                         f"'tcp://HOST:PORT', got {cluster!r}")
    try:
        return _dd.Client(cluster, timeout=timeout)
    except OSError as err:
        raise OSError(f"cluster {cluster}: cannot connect to the scheduler ({err})") from err


def _local_client(n_workers, threads, timeout=30):
    """A ``Client`` with a ``LocalCluster`` of ``n_workers`` single-threaded worker processes,
    each running the kernels on ``threads`` threads (``connect("local:N")`` gives each its
    share of the cores)."""
    # one thread per worker: each process runs the kernels on its shard of sequences; the
    # scheduler's web server on any free port, so no fixed port is taken; calls to the
    # replicas straight to the workers, which are on this machine. Dask sets
    # MALLOC_TRIM_THRESHOLD_ in its workers, which turns off glibc's adaptive mmap
    # threshold: every step's large arrays were then mapped afresh and page-faulted
    # (2 workers, default model, batch 64: 35 ms per step against 29 ms without it).
    # Each worker's kernel calls run on its share of the cores (FASTBPTT_NUM_THREADS), so
    # that N workers ask for no more threads than the machine has; OpenMP, which Dask
    # limits to one thread per worker (OMP_NUM_THREADS=1), is given the same share, or the
    # kernels would keep to one thread whatever the share. Both go to the workers alone
    # (the nannies' env), set as each worker starts, before it loads the kernels: what
    # Dask sets before spawning a worker ("pre-spawn") it also leaves in this process's
    # environment, where the next cluster's workers would inherit it.
    # The workers and this process share this machine's cores, so Dask's own periodic work
    # is cut: the workers' statistical profiler (the dashboard's profile page), which
    # sampled every thread's stack 100 times a second on the worker's event loop, is off;
    # the event loops' responsiveness tick (every server: the scheduler, the nannies, the
    # workers) runs every second instead of every 20 ms, the memory monitors (nannies and
    # workers) every second instead of every 0.1 s, the system monitors (the dashboard's
    # system page) every 2 s instead of 0.5 s. Idle, that took each worker's event loop
    # from 37 to 2-3 ms of CPU a second and this process's from 42 to 10.
    environ = "distributed.nanny.pre-spawn-environ."
    with dask.config.set({environ + "MALLOC_TRIM_THRESHOLD_": None,
                          environ + "OMP_NUM_THREADS": None,
                          "distributed.worker.profile.enabled": False,
                          "distributed.admin.tick.interval": "1s",
                          "distributed.worker.memory.monitor-interval": "1s",
                          "distributed.admin.system-monitor.interval": "2s"}):
        return _dd.Client(n_workers=n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", direct_to_workers=True, timeout=timeout,
                          env={"FASTBPTT_NUM_THREADS": str(threads),
                               "OMP_NUM_THREADS": str(threads)})


def _check_client(client):
    if not isinstance(client, _dd.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    if client.status != "running":
        raise ValueError(f"client is not connected (status {client.status!r}): pass a running "
                         "distributed.Client")
    return client


def worker_addresses(client):
    """The addresses of the workers of ``client``'s cluster now, sorted."""
    try:
        info = client.scheduler_info(n_workers=-1)      # all of them, not the first five
    except TypeError:                                   # a distributed that lists them all
        info = client.scheduler_info()
    return sorted(info["workers"])


def _alive(client):
    return set(worker_addresses(client))


# ------------------------------------------------------------------------------- a replica
def _rebuild(config, backend, params):
    """The model of ``Model.config`` ``config`` on ``backend`` with these parameters."""
    c = dict(config)
    model = Model(c.pop("n_input"), c.pop("n_hidden"), c.pop("n_output"), backend=backend,
                  seed=0, **c)
    for name, p in model.params.items():
        p[...] = params[name]
    return model


def _clip_and_update(grads, optimizer, max_norm, clip_value):
    """Clip ``grads`` (value, then global norm) and update; False where the gradient is not
    finite and the update was skipped. The single-process loop of ``fastbptt train`` does
    exactly this."""
    if clip_value is not None:
        norm = _clip.clip_grad_value(grads, clip_value, error_if_nonfinite=False)
        if math.isfinite(norm):
            _clip.clip_grad_norm(grads, max_norm)
    else:
        norm = _clip.clip_grad_norm(grads, max_norm, error_if_nonfinite=False)
    if not math.isfinite(norm):
        return False
    optimizer.step(grads)
    return True


class _Replica:
    """One replica on a worker (a Dask actor): the model, its optimizer, its shard of streams
    and their recurrent state.

    The client's calls ``steps``, ``link``, ``snapshot``, ``params_now`` and
    ``recurrent_state`` carry a sequence number. Each is handed, in that order, to the worker's
    actor thread as soon as it arrives, so the thread goes from one chunk of steps straight
    into the next without waiting for the event loop; the event loop meanwhile answers the
    client. Replicas whose workers are all on one machine exchange over their own sockets
    (``listen``, ``link``; each link opens with a random token of the training, and a
    connection that does not is refused), from the actor thread: the bytes of the vectors,
    nothing else, and no event loop in the way. Elsewhere an exchange runs on the event loop,
    through Dask's comms (its TLS, the workers' ports), while the thread waits for its result;
    ``push`` (a peer's part of such an exchange) and ``abort`` run on the event loop at
    once."""

    def __init__(self, rank, world, config, backend, params, ids, batch, seq_len, rows, start,
                 optimizer, lr, optimizer_options, max_norm, clip_value, sync_every):
        self.rank, self.world = rank, world
        self.model = _rebuild(config, backend, params)
        self.optimizer = OPTIMIZERS[optimizer](self.model.params, lr=lr, **optimizer_options)
        self.streams = data.Streams(ids, batch, seq_len, rows=slice(*rows))
        self.streams.position = start
        self.weight = (rows[1] - rows[0]) / batch
        self.max_norm, self.clip_value, self.sync_every = max_norm, clip_value, sync_every
        self.state = None
        self.pending = None          # the update of the last step, applied on the next call
        self.n_skipped = 0
        self.names = list(self.model.params)
        self.sizes = [self.model.params[n].size for n in self.names]
        self.n_params = sum(self.sizes)
        self.peers = None
        self._arrived = {}           # seq -> a call waiting for the calls before it
        self._next = 0               # the seq of the next call to hand to the thread
        self._loop = self._context = None
        self._boxes = {}
        self._sends = []             # sends not yet acknowledged by the peer
        self._aborted = None
        self._listener = None
        self._links = None           # rank -> a socket to that replica (replicas on one machine)

    def connect(self, peers):
        """The other replicas' actors, indexed by rank (this one's entry is unused)."""
        self.peers = list(peers)
        return self.rank

    # -- links between replicas on one machine -----------------------------------------------
    async def listen(self):
        """Open a listening socket on this worker's host: its (host, port)."""
        host = _host(_dd.get_worker().address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, 0), family=family)
        self._listener.settimeout(LINK_TIMEOUT_S)
        return self._listener.getsockname()[:2]

    def _link(self, endpoints, token):
        """Connect to every other replica (``endpoints``: their ``listen`` answers, by rank):
        to the lower ranks' listeners, and accept the higher ranks'; each says the training's
        ``token`` and its rank (``_accept_peers``)."""
        links = {}
        try:
            for peer in range(self.rank):
                sock = socket.create_connection(tuple(endpoints[peer]), LINK_TIMEOUT_S)
                sock.sendall(token + struct.pack("<i", self.rank))
                links[peer] = sock
            links.update(_accept_peers(self._listener, token,
                                       range(self.rank + 1, self.world)))
        finally:
            self._listener.close()
        for sock in links.values():
            sock.settimeout(None)                    # a step waits as long as the peer works
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._links = links
        return sorted(links)

    def _send_to(self, peer, vec):
        try:
            self._links[peer].sendall(memoryview(vec).cast("B"))
        except OSError as err:
            raise RuntimeError(f"replica {self.rank} lost its link to replica {peer} "
                               f"({self._aborted or err!r})") from None

    def _recv_from(self, peer, like):
        out = np.empty_like(like)
        try:
            _recv_exactly(self._links[peer], out.nbytes, memoryview(out).cast("B"))
        except OSError as err:
            raise RuntimeError(f"replica {self.rank} lost its link to replica {peer} "
                               f"({self._aborted or err!r})") from None
        return out

    def _allreduce_linked(self, vec):
        """``_allreduce`` over the links, in the actor thread: in each pair the lower rank
        sends first and the higher receives first, so neither waits on a full socket."""
        rank, world = self.rank, self.world
        top = 1 << (world.bit_length() - 1)
        if rank >= top:
            self._send_to(rank - top, vec)
            return self._recv_from(rank - top, vec)
        if rank + top < world:
            vec = vec + self._recv_from(rank + top, vec)
        d = 1
        while d < top:
            peer = rank ^ d
            if rank < peer:
                self._send_to(peer, vec)
                other = self._recv_from(peer, vec)
            else:
                other = self._recv_from(peer, vec)
                self._send_to(peer, vec)
            vec = vec + other            # the partner computes other + vec: the same bits
            d <<= 1
        if rank + top < world:
            self._send_to(rank + top, vec)
        return vec

    # -- order ------------------------------------------------------------------------------
    async def _ordered(self, seq, fn, *args):
        """``fn(*args)`` in the actor thread, after every call with a smaller ``seq``."""
        loop = self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        done = loop.create_future()
        self._arrived[seq] = (fn, args, done)
        executor = _dd.get_worker().executors["actor"]          # one thread, in order
        while self._next in self._arrived:
            fn_, args_, done_ = self._arrived.pop(self._next)
            self._next += 1
            job = loop.run_in_executor(executor, self._job, fn_, args_)
            job.add_done_callback(lambda job, done=done_: _settle(job, done))
        return await done

    def _job(self, fn, args):
        if self._aborted:
            raise RuntimeError(f"replica {self.rank}: {self._aborted}")
        return fn(*args)

    # -- messages (on the event loop) --------------------------------------------------------
    def _box(self, tag):
        box = self._boxes.get(tag)
        if box is None:
            box = self._boxes[tag] = asyncio.get_running_loop().create_future()
            if self._aborted:
                box.set_exception(RuntimeError(f"replica {self.rank}: {self._aborted}"))
        return box

    async def push(self, tag, payload):
        """A peer's part of the exchange ``tag``."""
        box = self._box(tag)
        if not box.done():
            box.set_result(payload)

    async def _recv(self, tag):
        try:
            return await self._box(tag)
        finally:
            self._boxes.pop(tag, None)

    async def _send(self, rank, tag, payload):
        await self.peers[rank].push(tag, payload)

    async def _sent(self):
        """Wait until the peers have every message sent so far (an error if one could not
        be delivered). An exchange does not wait for its own sends: the peer needs the data,
        the sender only needs to know, by the next exchange, that it arrived."""
        sends, self._sends = self._sends, []
        for send in sends:
            await send

    def _undelivered(self, send):
        """A send that failed fails every wait for a peer: the exchange cannot complete."""
        if send.cancelled() or send.exception() is None:
            return
        for box in self._boxes.values():
            if not box.done():
                box.set_exception(RuntimeError(
                    f"replica {self.rank} could not reach a peer: {send.exception()!r}"))

    async def abort(self, reason):
        """Fail whatever waits for a peer (a peer is gone) and every later call."""
        self._aborted = str(reason)
        for send in self._sends:
            send.cancel()
        self._sends = []
        for box in self._boxes.values():
            if not box.done():
                box.set_exception(RuntimeError(f"replica {self.rank}: {reason}"))
        self.peers = None            # drop the handles (they keep the peers' actors alive)
        for sock in (self._links or {}).values():
            try:
                sock.shutdown(socket.SHUT_RDWR)      # a wait in the actor thread ends
            except OSError:
                pass
        if self._listener is not None:
            self._listener.close()

    async def _allreduce(self, tag, vec):
        """The sum over the replicas of ``vec``, the same bits on every replica: recursive
        doubling over the largest power of two P <= R; replicas P..R-1 first add into
        replica r - P and get the result back from it."""
        rank, world = self.rank, self.world
        await self._sent()
        top = 1 << (world.bit_length() - 1)
        if rank >= top:
            await self._send(rank - top, (tag, "in"), vec)
            return await self._recv((tag, "out"))
        if rank + top < world:
            vec = vec + await self._recv((tag, "in"))
        d = 1
        while d < top:
            # a new array each round: the one sent is never written to
            send = asyncio.ensure_future(self._send(rank ^ d, (tag, d), vec))
            send.add_done_callback(self._undelivered)
            self._sends.append(send)
            other = await self._recv((tag, d))
            vec = vec + other            # the partner computes other + vec: the same bits
            d <<= 1
        if rank + top < world:
            await self._send(rank + top, (tag, "out"), vec)   # waited for: vec is updated next
        return vec

    def _exchange(self, tag, vec):
        """The sum over the replicas of ``vec``, from the actor thread: the exchange runs on
        the event loop, in the context of the client's call (where Dask finds the worker, to
        reach the peers' actors), while the thread waits."""
        if self.world == 1:
            return vec
        if self._links is not None:
            return self._allreduce_linked(vec)
        result = concurrent.futures.Future()

        def start():
            task = asyncio.ensure_future(self._allreduce(tag, vec))
            task.add_done_callback(lambda task: _settle(task, result))

        self._loop.call_soon_threadsafe(start, context=self._context)
        return result.result()

    # -- the work (in the actor thread) ------------------------------------------------------
    def _views(self, flat):
        """A gradient dict whose arrays are consecutive pieces of ``flat``."""
        out, offset = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = flat[offset:offset + size].reshape(self.model.params[name].shape)
            offset += size
        return out

    def _flat_params(self):
        return np.concatenate([self.model.params[n].reshape(-1) for n in self.names])

    def _apply_pending(self):
        """Apply the update of the last step, if not yet applied."""
        if self.pending is None:
            return
        kind, payload = self.pending
        self.pending = None
        if kind == "params":                                   # averaged parameters
            for name, view in self._views(payload).items():
                self.model.params[name][...] = view
            return
        if not payload.flags.writeable:                        # as received from a peer
            payload = payload.copy()
        if not _clip_and_update(self._views(payload), self.optimizer, self.max_norm,
                                self.clip_value):
            self.n_skipped += 1

    def _step(self, step, xi):
        """Apply the last step's update; forward and backward on the next window of this
        shard; exchange. Returns (loss on this shard, seconds applying the last update,
        computing, in the exchange)."""
        t0 = time.perf_counter()
        self._apply_pending()
        t1 = time.perf_counter()
        x, y, reset = next(self.streams)
        if reset:
            self.state = None
        flat = np.empty(self.n_params, self.model.dtype)
        loss, _, self.state = self.model.loss_and_grads(x, y, state=self.state, xi=xi,
                                                        grads=self._views(flat))
        if self.sync_every == 1:
            flat *= flat.dtype.type(self.weight)
            t2 = time.perf_counter()
            self.pending = ("grads", self._exchange(step, flat))
        elif step % self.sync_every == 0:
            # local SGD, a step that ends with averaging: this replica's own update now
            if not _clip_and_update(self._views(flat), self.optimizer, self.max_norm,
                                    self.clip_value):
                self.n_skipped += 1
            flat = self._flat_params()
            flat *= flat.dtype.type(self.weight)
            t2 = time.perf_counter()
            self.pending = ("params", self._exchange(step, flat))
        else:
            t2 = time.perf_counter()
            self.pending = ("grads", flat)                     # local SGD: its own gradient
        return loss, t1 - t0, t2 - t1, time.perf_counter() - t2

    def _snapshot(self, seq, average):
        self._apply_pending()
        if average and self.world > 1:
            flat = self._flat_params()
            flat *= flat.dtype.type(self.weight)
            flat = self._exchange(("snapshot", seq), flat)
            if self.rank:
                return None
            params = self._views(flat)
        else:
            if self.rank:
                return None
            params = self.model.params
        return ({n: np.array(p) for n, p in params.items()}, self.n_skipped)

    def _params_now(self):
        self._apply_pending()
        return {n: p.copy() for n, p in self.model.params.items()}

    def _steps(self, first, xis):
        """Steps ``first``, ``first + 1``, ... with the truncation multipliers ``xis`` (one
        per step), one after the other in the actor thread."""
        results = []
        for i, xi in enumerate(xis):
            if self._aborted:                      # between two steps of a chunk
                raise RuntimeError(f"replica {self.rank}: {self._aborted}")
            results.append(self._step(first + i, xi))
        return results

    # -- the client's calls ------------------------------------------------------------------
    async def steps(self, seq, first, xis):
        """A chunk of ``len(xis)`` steps from step ``first`` (counted from 1), in one
        message: per step (loss on this shard, seconds applying the last update, computing,
        in the exchange)."""
        return await self._ordered(seq, self._steps, first, xis)

    async def snapshot(self, seq, average):
        """The parameters after the last step and the count of skipped updates (replica 0
        returns them, the others None); with ``average`` the mean of the replicas' (local SGD
        between two averagings), without changing any replica."""
        return await self._ordered(seq, self._snapshot, seq, average)

    async def params_now(self, seq):
        """This replica's parameters after the last step."""
        return await self._ordered(seq, self._params_now)

    async def link(self, seq, endpoints, token):
        """Open the links to the other replicas (see ``listen``), each opened with ``token``;
        the ranks linked."""
        return await self._ordered(seq, self._link, endpoints, token)

    async def recurrent_state(self, seq):
        """The recurrent state of this replica's streams after the last step (None before the
        first, or at the start of a pass)."""
        return await self._ordered(seq, lambda: self.state)


def _host(address):
    """The host of a Dask address such as ``tcp://127.0.0.1:40000`` (None where it is not
    ``tcp://``)."""
    m = re.match(r"tcp://(\[[^\]]*\]|[^:/]+):\d+\Z", address)
    return m.group(1).strip("[]") if m else None


def _accept_peers(listener, token, ranks):
    """{rank: socket} of the replicas of ``ranks`` connecting to ``listener``, each opening
    with ``token`` (the training's, ``secrets.token_bytes``) and its rank. A connection that
    opens otherwise (another program on the machine, a rank already linked or not expected) is
    closed and the wait goes on: it would otherwise put its bytes into the sum of the
    gradients. ``socket.timeout`` if the replicas do not all connect within the listener's
    timeout (``LINK_TIMEOUT_S``)."""
    expected, links = set(ranks), {}
    while expected:
        sock, _ = listener.accept()
        try:
            sock.settimeout(LINK_TIMEOUT_S)
            opening = _recv_exactly(sock, len(token) + 4)
            rank = struct.unpack("<i", opening[len(token):])[0]
        except (OSError, ConnectionError):
            sock.close()
            continue
        if opening[:len(token)] != token or rank not in expected:
            sock.close()
            continue
        expected.discard(rank)
        links[rank] = sock
    return links


def _recv_exactly(sock, n_bytes, into=None):
    """``n_bytes`` from ``sock`` (into the writable buffer ``into`` where given)."""
    view = memoryview(bytearray(n_bytes)) if into is None else into
    got = 0
    while got < n_bytes:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the connection was closed")
        got += n
    return view.obj if into is None else into


def _settle(job, done):
    """Pass the outcome of ``job`` (a future) on to ``done`` (an asyncio or a
    concurrent.futures future)."""
    if done.done():
        return
    if job.cancelled():
        done.cancel()
    elif job.exception() is not None:
        done.set_exception(job.exception())
    else:
        done.set_result(job.result())


# ------------------------------------------------------------------------------- the client side
class DataParallel:
    """Synchronous data-parallel training of ``model`` on the workers of ``client``.

    Parameters
    ----------
    model : a ``fastbptt.nn.Model`` on ``fastbptt`` or ``fastbptt.reference``; its parameters
        start every replica, and ``pull`` copies the trained ones back into it.
    ids : the training token ids (1-D); every worker gets them once.
    client : a running ``distributed.Client`` (``connect``).
    batch : N, the global batch: parallel streams over ``ids`` as ``Streams(ids, N, seq_len)``
        cuts them; replica r of R serves a contiguous shard of about N / R of them.
    seq_len : T, steps per window.
    optimizer : 'adam', 'adagrad' or 'sgd' (``fastbptt.nn.optim``), with ``lr`` (default the
        optimizer's) and ``optimizer_options`` (e.g. ``{"momentum": 0.9}``).
    clip : the global norm to clip the summed gradient to; None or 0: no clipping.
    clip_value : also clip every entry into [-clip_value, clip_value] first (None: no).
    sync_every : 1 (default): sum gradients every step, equal to single-process training. k > 1:
        k local steps on each replica, then average the parameters (local SGD; not equal).
    start : the window the streams start at (the number of steps already taken, to resume).
    workers : the worker addresses to use (default all the client's, one replica each, at most
        ``batch`` of them).
    timeout : seconds to wait for one chunk of steps before giving up with a ``TimeoutError``
        (default None: wait as long as the replicas' workers are alive).

    ``linked`` says whether the replicas exchange over sockets of their own (all their workers
    on one machine, ``tcp://`` addresses) rather than through Dask's comms.
    """

    def __init__(self, model, ids, *, client, batch, seq_len, optimizer="adam", lr=None,
                 optimizer_options=None, clip=5.0, clip_value=None, sync_every=1, start=0,
                 workers=None, timeout=None):
        self.client = _check_client(client)
        if not isinstance(model, Model):
            raise TypeError(f"model must be a fastbptt.nn.Model, got {type(model).__name__}")
        if model.backend is None:
            raise ValueError("model.impl must be fastbptt or fastbptt.reference: the replicas "
                             "rebuild the model on the workers by its backend name")
        self.model = model
        self.batch = _count("batch", batch, 1)
        self.seq_len = _count("seq_len", seq_len, 1)
        self.sync_every = _count("sync_every", sync_every, 1)
        self.start = _count("start", start, 0)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        options = dict(optimizer_options or {})
        if lr is None:
            lr = _default_lr(optimizer)
        if clip is not None and not (clip >= 0):
            raise ValueError(f"clip must be >= 0 or None, got {clip!r}")
        max_norm = float(clip) if clip else math.inf
        if clip_value is not None and not clip_value > 0:
            raise ValueError(f"clip_value must be positive or None, got {clip_value!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {timeout!r}")
        self.timeout = timeout
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be a 1-D array of token ids, got {ids.dtype} "
                             f"{ids.shape}")
        span = (len(ids) - 1) // self.batch
        if span < self.seq_len:
            raise ValueError(f"{len(ids)} ids are too few for batch {self.batch} x seq_len "
                             f"{self.seq_len} (at least {self.batch * self.seq_len + 1})")

        if workers is None:
            workers = worker_addresses(client)
        workers = list(workers)
        if not workers:
            raise ValueError("the cluster has no workers")
        missing = set(workers) - _alive(client)
        if missing:
            raise ValueError(f"workers {sorted(missing)} are not workers of the cluster")
        self.workers = workers[:self.batch]
        self.world = len(self.workers)
        # contiguous shards, sizes differing by at most one (the first ones larger)
        bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(self.batch),
                                                                  self.world)])
        self.shards = [(int(bounds[r]), int(bounds[r + 1])) for r in range(self.world)]
        self.weights = [(b - a) / self.batch for a, b in self.shards]

        self._seq = 0
        self._steps = 0              # steps finished (their losses returned)
        self._issued = 0
        self._broken = None
        self.n_skipped = 0
        self.timings = []            # per step: (apply, compute, exchange) max over replicas,
        #                              min exchange, and the client's wall time between steps
        self._last_done = None
        self._futures = []
        try:
            ids_future = client.scatter(ids, workers=self.workers, broadcast=True, hash=False)
            params = {n: p for n, p in model.params.items()}
            for rank, address in enumerate(self.workers):
                self._futures.append(client.submit(
                    _Replica, rank, self.world, model.config, model.backend, params,
                    ids_future, self.batch, self.seq_len, self.shards[rank], self.start,
                    optimizer, float(lr), options, max_norm, clip_value, self.sync_every,
                    actor=True, workers=[address], allow_other_workers=False, pure=False))
            try:
                self._actors = self._wait(self._futures, "starting the replicas")
            except (ImportError, AttributeError, TypeError) as err:
                raise RuntimeError(f"the workers could not start a replica ({err}): every "
                                   "worker needs this version of fastbptt installed") from err
            self._wait([a.connect(self._actors) for a in self._actors], "connecting replicas")
            hosts = {_host(address) for address in self.workers}
            self.linked = self.world > 1 and len(hosts) == 1 and None not in hosts
            if self.linked:
                # replicas on one machine exchange over their own sockets, from the actor
                # threads; elsewhere through Dask's comms (its TLS, its ports)
                endpoints = self._wait([a.listen() for a in self._actors], "opening links")
                token = secrets.token_bytes(LINK_TOKEN_BYTES)     # this training's links only
                self._wait(self._call("link", endpoints, token), "linking the replicas")
        except BaseException:
            self.close()
            raise

    # -- waiting --------------------------------------------------------------------------
    def _wait(self, futures, what):
        """The results of ``futures`` (actor calls or Dask futures), one per replica, checking
        every POLL_S seconds that the replicas' workers are alive. Actor calls are awaited
        together on the client's event loop: one hand-over between threads per step."""
        started = time.perf_counter()
        while True:
            try:
                results = self.client.sync(_gather, list(futures), callback_timeout=POLL_S)
                break
            except (TimeoutError, _dd.TimeoutError):
                self._check_alive(what)
                if self.timeout is not None and time.perf_counter() - started > self.timeout:
                    self._fail(f"{what}: no answer in {self.timeout:g} s")
                    raise TimeoutError(f"{what}: the replicas did not answer in "
                                       f"{self.timeout:g} s") from None
        for rank, result in enumerate(results):
            if isinstance(result, BaseException):
                # a replica whose peer died fails before the scheduler has noticed the death:
                # give it a moment to, so the error says which worker is gone
                deadline = time.perf_counter() + LOSS_GRACE_S
                while True:
                    self._check_alive(what)
                    if time.perf_counter() > deadline:
                        break
                    time.sleep(0.1)
                self._fail(f"{what} failed on replica {rank}: {result}")
                raise result
        return results

    def _check_alive(self, what):
        try:
            alive = _alive(self.client)
        except Exception as err:                 # the scheduler itself is gone
            self._broken = f"the scheduler stopped answering during {what} ({err})"
            raise ReplicaLostError(self._broken) from err
        for rank, address in enumerate(self.workers):
            if address not in alive:
                self._fail(f"worker {address} left the cluster")
                raise ReplicaLostError(
                    f"worker {address}, holding replica {rank} of {self.world}, left the "
                    f"cluster during {what}: its streams' recurrent state and optimizer state "
                    f"are lost, so training cannot go on; start again from a saved model")

    def _fail(self, reason):
        """Mark the run broken and release the surviving replicas from their waits."""
        if self._broken is None:
            self._broken = reason
        for actor in getattr(self, "_actors", ()):
            try:
                actor.abort(reason)
            except Exception:
                pass

    def _call(self, method, *args):
        if self._broken is not None:
            raise ReplicaLostError(f"this DataParallel is broken: {self._broken}")
        seq = self._seq
        self._seq += 1
        return [getattr(actor, method)(seq, *args) for actor in self._actors]

    # -- training -------------------------------------------------------------------------
    @property
    def step_count(self):
        """The steps taken, counting ``start``: the step the parameters of ``pull`` are after."""
        return self.start + self._steps

    def _issue(self, xi, size):
        """Issue the next ``size`` steps as one chunk: (first step, last step, the calls)."""
        first = self.start + self._issued + 1
        xis = [xi() if callable(xi) else xi for _ in range(size)]
        futures = self._call("steps", first, xis)
        self._issued += size
        return first, first + size - 1, futures

    def _finish(self, issued):
        """Wait for a chunk; its losses (the mean over the global batch), step by step."""
        first, last, futures = issued
        what = f"step {first}" if first == last else f"steps {first}-{last}"
        results = self._wait(futures, what)
        now = time.perf_counter()
        size = last - first + 1
        wall = (now - self._last_done) / size if self._last_done is not None else float("nan")
        self._last_done = now
        losses = []
        for i in range(size):
            t = np.array([r[i][1:] for r in results])
            losses.append(sum(w * r[i][0] for w, r in zip(self.weights, results)))
            self.timings.append((t[:, 0].max(), t[:, 1].max(), t[:, 2].max(), t[:, 2].min(),
                                 wall))
        return losses

    def _chunk(self, remaining, chunk, stops):
        """The size of the next chunk: at most ``chunk`` and ``remaining`` steps, ending at the
        first step where ``stops`` is true."""
        first = self.start + self._issued + 1
        size = min(chunk, remaining)
        if stops is not None:
            for k in range(size):
                if stops(first + k):
                    return k + 1
        return size

    def train(self, n_steps, xi=None, *, chunk=CHUNK, stops=None):
        """Take ``n_steps`` steps; yield the loss (the mean over the global batch) of each.

        ``xi`` is the truncation multipliers of every window (``fastbptt.truncation``), or a
        callable returning those of each step in turn (called on the client as the steps are
        issued: the replicas use the same), or None (full BPTT within the window).

        The steps go to the replicas in chunks of up to ``chunk`` steps, one message per
        replica for a chunk, whose losses come back together; the next chunk is issued before
        this one's losses are yielded. ``stops(step)`` (``step`` counts ``start``, as
        ``step_count`` does) is true after the steps where the caller reads the replicas
        (``pull``, ``state``, ``replica_params``): a chunk ends there, and nothing after it is
        issued until the loop asks for the next loss. Inside the loop they may be called only
        there (elsewhere the replicas are already past ``step_count``: a ``RuntimeError``);
        after the loop, always. Stopping early (``close``, an interrupt) lets the issued steps
        finish, so ``step_count`` and ``pull`` stay consistent."""
        n_steps = _count("n_steps", n_steps, 0)
        chunk = _count("chunk", chunk, 1)
        if stops is not None and not callable(stops):
            raise TypeError(f"stops must be a callable or None, got {type(stops).__name__}")
        return self._train(n_steps, xi, chunk, stops)

    def _train(self, n_steps, xi, chunk, stops):
        if self._issued != self._steps:
            raise RuntimeError("another train loop of this DataParallel is still running")
        in_flight = deque()
        issued = 0
        losses = deque()
        try:
            while issued < n_steps or in_flight:
                while (issued < n_steps and len(in_flight) < 2
                       and not (in_flight and stops is not None and stops(in_flight[-1][1]))):
                    if not in_flight:            # nothing running: time the chunk from here
                        self._last_done = time.perf_counter()
                    in_flight.append(self._issue(xi, self._chunk(n_steps - issued, chunk,
                                                                 stops)))
                    issued += in_flight[-1][1] - in_flight[-1][0] + 1
                losses.extend(self._finish(in_flight[0]))   # in flight if this is interrupted
                in_flight.popleft()
                while losses:
                    self._steps += 1
                    yield losses.popleft()
        finally:
            self._steps += len(losses)                       # finished, not yielded
            if self._broken is None:
                while in_flight:
                    self._steps += len(self._finish(in_flight.popleft()))

    def step(self, xi=None):
        """One step; its loss."""
        return list(self.train(1, xi))[0]

    def _settled(self, what):
        """Refuse to read the replicas while they are past ``step_count``."""
        if self._broken is None and self._issued != self._steps:
            raise RuntimeError(
                f"{what} after step {self.step_count}: the replicas are already running steps "
                f"up to {self.start + self._issued}; inside a train loop, read them only at "
                f"the steps where train's stops(step) is true")

    def pull(self):
        """Copy the parameters after the last finished step into ``model.params`` (in place)
        and return the model. With ``sync_every > 1`` between two averagings it is the mean
        of the replicas' parameters."""
        self._settled("pull()")
        average = self.sync_every > 1 and self.step_count % self.sync_every != 0
        results = self._wait(self._call("snapshot", average), "pulling the parameters")
        params, self.n_skipped = results[0]
        for name, p in self.model.params.items():
            p[...] = params[name]
        return self.model

    def replica_params(self):
        """Every replica's parameters after the last step (a list of dicts, by rank): equal
        with ``sync_every=1``."""
        self._settled("replica_params()")
        return self._wait(self._call("params_now"), "reading the replicas' parameters")

    def state(self):
        """The recurrent state of all ``batch`` streams after the last step, as the model's
        ``loss_and_grads`` hands it back (one dict per layer; the replicas' rows in order), or
        None where the streams start a new pass."""
        self._settled("state()")
        parts = self._wait(self._call("recurrent_state"), "reading the recurrent state")
        if any(p is None for p in parts):
            return None
        return [{k: np.concatenate([p[layer][k] for p in parts]) for k in parts[0][layer]}
                for layer in range(len(parts[0]))]

    def timing_summary(self):
        """Where a step's time goes, in seconds, the median over the steps after the first:
        ``wall`` (on the client, the time between two chunks' results over the chunk's steps),
        ``compute`` (forward and backward, the slower replica), ``apply`` (clipping and the
        optimizer, the slower replica), ``exchange`` (in the exchange of gradients, the replica
        that waited least: the transfer itself) and ``communication``: ``wall - compute -
        apply`` step by step, all that a step costs beyond its computation (the exchange,
        waiting for the slower replica, the messages from and to the client). None before two
        steps."""
        t = np.array(self.timings[1:], dtype=float).reshape(-1, 5)
        if not len(t):
            return None
        apply, compute, _, exchange, wall = (float(v) for v in np.nanmedian(t, axis=0))
        rest = t[:, 4] - t[:, 1] - t[:, 0]                 # step by step
        return {"wall": wall, "compute": compute, "apply": apply, "exchange": exchange,
                "communication": max(0.0, float(np.nanmedian(rest)))}

    def close(self):
        """Release the replicas (their workers drop them)."""
        actors = getattr(self, "_actors", None)
        if actors is not None and self._broken is None:
            try:
                self._wait([a.abort("closed") for a in actors], "closing")
            except Exception:
                pass
        self._actors = []
        for f in self._futures:
            f.release()
        self._futures = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


async def _gather(futures):
    """The results of actor calls or Dask futures (both awaitable on the client's loop), an
    exception in place of a result that failed."""
    async def result(future):
        return await future
    return await asyncio.gather(*[result(f) for f in futures], return_exceptions=True)


def _default_lr(optimizer):
    """The default learning rate of an optimizer class (its ``lr`` keyword's default)."""
    return inspect.signature(OPTIMIZERS[optimizer]).parameters["lr"].default


def train(model, ids, n_steps, *, client, **options):
    """Train ``model`` on ``ids`` for ``n_steps`` synchronous data-parallel steps on the
    cluster of ``client`` (``DataParallel``'s options: ``batch``, ``seq_len``, ``optimizer``,
    ``lr``, ``clip``, ``sync_every``...); the model's parameters are the trained ones after,
    and the losses are returned."""
    with DataParallel(model, ids, client=client, **options) as dp:
        losses = list(dp.train(n_steps))
        dp.pull()
    return losses


# ------------------------------------------------------------------------------- sweeps
def sweep(fn, configs, *args, client, on_result=None):
    """``[fn(config, *args) for config in configs]``, each call an independent task on the
    cluster of ``client``.

    ``args`` (e.g. a corpus) are sent to the cluster once and shared by the tasks. ``fn`` must
    be importable on the workers (a module-level function). ``on_result(index, result)`` is
    called on the client as each run finishes, in the order they finish. A task whose worker
    dies is run again elsewhere (Dask's retries); an exception in ``fn`` is raised here, naming
    the configuration."""
    _check_client(client)
    configs = list(configs)
    shared = [client.scatter(a, broadcast=False, hash=False) for a in args]
    futures = [client.submit(fn, config, *shared, pure=False) for config in configs]
    index = {f.key: i for i, f in enumerate(futures)}
    results = [None] * len(configs)
    try:
        for future in _dd.as_completed(futures):
            i = index[future.key]
            try:
                results[i] = future.result()
            except Exception as err:
                raise RuntimeError(f"run {i} of the sweep ({configs[i]!r}) failed: "
                                   f"{err}") from err
            if on_result is not None:
                on_result(i, results[i])
    finally:
        client.cancel([f for f in futures if not f.done()])
    return results
