"""Data-parallel training on Dask (``fastbptt.nn.distributed``) and ``fastbptt train --cluster``.

On a ``LocalCluster`` of two single-threaded worker processes (one per module, started once):
synchronous training equals training on one process (float64, 1e-10) for every cell, with the
recurrent state of each shard carried across windows on its replica; ``sync_every`` (local SGD)
converges; sweeps run as tasks; a killed worker fails the step with a clear error and leaves the
saved model loadable, and ``--resume`` continues from it. The steps go to the replicas in chunks:
chunked steps give the bits of single ones, and a chunk ends where the client reads the replicas.
Replicas on one machine exchange over sockets of their own, others through Dask's comms: both are
checked, with 2, 3 and 4 replicas (a module-scoped cluster of 4). Without ``--cluster`` nothing
imports Dask, and without Dask ``--cluster`` names the extra to install. The cluster tests are
skipped only where ``distributed`` is not installed.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import fastbptt
from fastbptt import clip, truncation
from fastbptt.cli import main
from fastbptt.nn import SGD, Adam, Model, data

CELLS = list(fastbptt.CELLS)
ROOT = Path(fastbptt.__file__).resolve().parent.parent
TINY = ["--hidden", "8", "--seq-len", "6", "--batch", "4", "--max-chars", "20000",
        "--eval-every", "4", "--eval-chars", "500", "--sample-len", "0", "--no-progress"]


def exit_status(argv):
    """What ``fastbptt ARGV`` exits with: run's return value, or argparse's exit status."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster of 2 single-threaded worker processes running this checkout."""
    pytest.importorskip("distributed")
    from fastbptt.nn.distributed import connect
    client = connect("local:2")
    try:
        client.wait_for_workers(2, timeout=60)
        files = client.run(lambda: __import__("fastbptt").__file__)
        assert set(files.values()) == {fastbptt.__file__}, (
            f"the workers import another fastbptt: {files}; set PYTHONPATH for them")
        yield client
    finally:
        client.close()


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    words = ["def ", "return ", "self", ".x", " = ", "(", ")", ":\n    ", "if ", "None", "\n"]
    path = tmp_path / "corpus.txt"
    path.write_text("".join(rng.choice(words, 2000)), encoding="utf-8")
    return path


def one_process(model, ids, n_steps, *, batch, seq_len, lr, max_norm, xis=None,
                optimizer=None, clip_value=None):
    """Training on one process, as ``fastbptt train`` does it: the losses and final state."""
    opt = optimizer or Adam(model.params, lr=lr)
    grads = model.zeros_like_params()
    streams = data.Streams(ids, batch, seq_len)
    state, losses = None, []
    for step in range(n_steps):
        x, y, reset = next(streams)
        if reset:
            state = None
        xi = None if xis is None else xis[step]
        loss, _, state = model.loss_and_grads(x, y, state=state, xi=xi, grads=grads)
        if clip_value is not None:
            clip.clip_grad_value(grads, clip_value)
        clip.clip_grad_norm(grads, max_norm)
        opt.step(grads)
        losses.append(loss)
    return losses, state


def tiny_model(cell, seed=0, **kwargs):
    return Model(11, 8, 11, cell=cell, input="embedding", n_embed=5, dtype=np.float64,
                 seed=seed, **kwargs)


IDS = np.random.default_rng(1).integers(0, 11, 500).astype(np.int32)


# ------------------------------------------------------------------------------ the Python API
def _thread_counts():
    """fastbptt's thread count and OpenMP's limit in the process that runs this, and whether
    the kernels there have OpenMP at all (FASTBPTT_OPENMP=0 builds without: one thread)."""
    from fastbptt import _threads
    limit = _threads._openmp_threads()          # loads the kernels, and their OpenMP
    maps = "/proc/self/maps"
    openmp = limit > 1 or (os.path.exists(maps) and "libgomp" in open(maps).read())
    return _threads.get_num_threads(), limit if openmp else None


def _periodic_callbacks(dask_worker=None, dask_scheduler=None):
    """{name: milliseconds} of the periodic callbacks of a worker or of the scheduler."""
    server = dask_worker if dask_worker is not None else dask_scheduler
    return {name: pc.callback_time for name, pc in server.periodic_callbacks.items()}


def test_local_workers_run_the_kernels_on_their_share_of_the_cores(dask_client):
    """Each worker of ``local:N`` may take its share of the cores: fastbptt's count and
    OpenMP's (which Dask limits to one thread unless told otherwise), also for a cluster
    started after another in the same process (``local:1`` after the 2 workers here); Dask's
    own periodic work on the shared cores is cut."""
    from fastbptt.nn.distributed import connect
    cores = fastbptt._threads.available_cores()
    half = max(1, cores // 2)
    for counts in dask_client.run(_thread_counts).values():
        assert counts in ((half, half), (half, None)), counts      # None: no OpenMP
    # Dask's periodic work is cut: no statistical profiler, a tick and a memory check a
    # second, the system monitor every 2 s
    for callbacks in dask_client.run(_periodic_callbacks).values():
        assert "profile" not in callbacks, callbacks
        assert (callbacks["tick"], callbacks["memory_monitor"], callbacks["monitor"]) == (
            1000, 1000, 2000), callbacks
    assert dask_client.run_on_scheduler(_periodic_callbacks)["tick"] == 1000
    client = connect("local:1")
    try:
        client.wait_for_workers(1, timeout=60)
        [counts] = client.run(_thread_counts).values()
        assert counts in ((cores, cores), (cores, None)), counts
    finally:
        client.close()


@pytest.mark.parametrize("cell", CELLS)
def test_equals_single_process_training(cell, dask_client):
    """5 steps, a batch of 5 streams split 3 + 2, randomized truncation, clipping active:
    the parameters equal one process's to 1e-10 and the two replicas hold the same bits."""
    from fastbptt.nn.distributed import DataParallel
    rng = np.random.default_rng(3)
    xis = [truncation.randomized(6, 0.6, rng) for _ in range(5)]
    expected = tiny_model(cell)
    losses, _ = one_process(expected, IDS, 5, batch=5, seq_len=6, lr=1e-2, max_norm=0.5,
                            xis=xis)
    model = tiny_model(cell)
    feed = iter(xis)
    with DataParallel(model, IDS, client=dask_client, batch=5, seq_len=6, lr=1e-2, clip=0.5,
                      timeout=60) as dp:
        assert dp.shards == [(0, 3), (3, 5)] and dp.linked      # workers on one machine
        got = list(dp.train(5, xi=lambda: next(feed)))
        replicas = dp.replica_params()
        dp.pull()
        assert dp.step_count == 5
    np.testing.assert_allclose(got, losses, rtol=1e-12)
    for name, p in expected.params.items():
        assert_close(model.params[name], p, np.float64, name)
        assert np.array_equal(replicas[0][name], replicas[1][name]), name
    assert any(not np.array_equal(model.params[n], tiny_model(cell).params[n])
               for n in model.params)                                    # it did train


def test_chunks_of_steps_stop_where_the_replicas_are_read(dask_client, monkeypatch):
    """Steps in chunks of 4 (one message per replica) give the bits of one step at a time. A
    chunk ends where ``stops`` is true, and nothing after it is issued until the loop goes on:
    ``pull`` there reads the parameters after that step, as one process has them; elsewhere
    in the loop the replicas are ahead, and ``pull`` is refused."""
    from fastbptt.nn.distributed import DataParallel
    sizes, issue = [], DataParallel._issue

    def recorded(self, xi, size):
        sizes.append(size)
        return issue(self, xi, size)

    monkeypatch.setattr(DataParallel, "_issue", recorded)
    runs = {}
    for chunk in (1, 4):
        sizes.clear()
        model, pulled = tiny_model("gru"), {}
        with DataParallel(model, IDS, client=dask_client, batch=4, seq_len=5, lr=1e-2,
                          clip=0.5, timeout=60) as dp:
            for _ in dp.train(10, chunk=chunk, stops=lambda step: step in (3, 7)):
                if dp.step_count in (3, 7):
                    pulled[dp.step_count] = {n: p.copy() for n, p in dp.pull().params.items()}
                elif dp.step_count == 1:
                    with pytest.raises(RuntimeError, match="already running steps up to"):
                        dp.pull()
            runs[chunk] = dp.replica_params(), pulled, list(sizes)
    assert runs[1][2] == [1] * 10 and runs[4][2] == [3, 4, 3]
    for rank in (0, 1):
        for name, p in runs[1][0][rank].items():
            assert np.array_equal(runs[4][0][rank][name], p), name
    for step in (3, 7):
        expected = tiny_model("gru")
        one_process(expected, IDS, step, batch=4, seq_len=5, lr=1e-2, max_norm=0.5)
        for name, p in expected.params.items():
            assert np.array_equal(runs[4][1][step][name], runs[1][1][step][name]), name
            assert_close(runs[4][1][step][name], p, np.float64, f"step {step} {name}")


@pytest.fixture(scope="module")
def four_workers():
    """A LocalCluster of 4 single-threaded worker processes."""
    pytest.importorskip("distributed")
    from fastbptt.nn.distributed import connect
    client = connect("local:4")
    try:
        client.wait_for_workers(4, timeout=60)
        yield client
    finally:
        client.close()


def unlinked(address):
    """A stand-in for ``distributed._host`` that puts every worker on a machine of its own."""
    return address


@pytest.mark.parametrize("world,linked", [(3, True), (4, True), (3, False)])
def test_more_replicas_and_exchanges_through_dask(world, linked, four_workers, monkeypatch):
    """3 replicas (one beyond a power of two: it adds into replica 0 first and gets the sum
    back) and 4 (two rounds of pairs), over their own sockets; and 3 through Dask's comms, as
    replicas on several machines exchange: equal to one process, and the replicas equal."""
    from fastbptt.nn import distributed
    if not linked:
        monkeypatch.setattr(distributed, "_host", unlinked)
    expected = tiny_model("lstm")
    losses, _ = one_process(expected, IDS, 4, batch=7, seq_len=5, lr=1e-2, max_norm=0.5)
    model = tiny_model("lstm")
    workers = distributed.worker_addresses(four_workers)[:world]
    with distributed.DataParallel(model, IDS, client=four_workers, batch=7, seq_len=5,
                                  lr=1e-2, clip=0.5, workers=workers, timeout=60) as dp:
        assert dp.world == world and dp.linked == linked
        got = list(dp.train(4, chunk=3))
        replicas = dp.replica_params()
        dp.pull()
    np.testing.assert_allclose(got, losses, rtol=1e-12)
    for name, p in expected.params.items():
        assert_close(model.params[name], p, np.float64, name)
        for rank in range(1, world):
            assert np.array_equal(replicas[rank][name], replicas[0][name]), (rank, name)


def test_replicas_link_only_over_plain_tcp():
    """The host the links between replicas use: only ``tcp://`` addresses have one (TLS and
    the other transports keep to Dask's comms)."""
    pytest.importorskip("distributed")
    from fastbptt.nn.distributed import _host
    assert _host("tcp://127.0.0.1:40000") == "127.0.0.1"
    assert _host("tcp://[::1]:40000") == "::1"
    assert _host("tcp://node-3:8786") == "node-3"
    for address in ("tls://10.0.0.1:8786", "inproc://10.0.0.1/1/2", "ucx://10.0.0.1:1"):
        assert _host(address) is None, address


def test_a_link_opens_only_with_the_training_token():
    """A replica accepts its higher-ranked peers' links only where they open with the token of
    its training and an expected rank, not yet linked: a connection from anything else (another
    program on the machine, a stale replica) is closed and the wait goes on, so nothing but a
    peer's gradient enters the sum."""
    pytest.importorskip("distributed")
    import socket
    import struct

    from fastbptt.nn.distributed import _accept_peers
    token = b"t" * 16
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    address = listener.getsockname()
    openings = [b"x" * 16 + struct.pack("<i", 1),       # another token
                token + struct.pack("<i", 7),           # a rank not expected
                b"short",                               # closed before its opening is whole
                token + struct.pack("<i", 2),           # a peer
                token + struct.pack("<i", 2),           # the same rank again
                token + struct.pack("<i", 1)]           # the other peer
    clients, links = [], {}
    for opening in openings:
        sock = socket.create_connection(address)
        sock.sendall(opening)
        if opening == b"short":
            sock.close()
        clients.append(sock)
    try:
        links = _accept_peers(listener, token, [1, 2])
        assert sorted(links) == [1, 2]
        for rank, client in ((2, clients[3]), (1, clients[5])):
            client.sendall(bytes([rank]))
            assert links[rank].recv(1) == bytes([rank])
        for bad in (clients[0], clients[1], clients[4]):
            bad.settimeout(10)
            assert bad.recv(1) == b""                   # closed by the replica
    finally:
        listener.close()
        for sock in clients + list(links.values()):
            sock.close()


def test_other_optimizers_value_clipping_and_uneven_work(dask_client):
    """SGD with momentum and value clipping, through the one-call ``train``; one worker more
    than there are streams: one replica, the same answer."""
    from fastbptt.nn.distributed import train
    for batch in (4, 1):
        expected = tiny_model("lstm")
        opt = SGD(expected.params, lr=0.5, momentum=0.9)
        losses, _ = one_process(expected, IDS, 4, batch=batch, seq_len=5, lr=0.5, max_norm=1.0,
                                optimizer=opt, clip_value=0.01)
        model = tiny_model("lstm")
        got = train(model, IDS, 4, client=dask_client, batch=batch, seq_len=5,
                    optimizer="sgd", lr=0.5, optimizer_options={"momentum": 0.9}, clip=1.0,
                    clip_value=0.01, timeout=60)
        np.testing.assert_allclose(got, losses, rtol=1e-12)
        for name, p in expected.params.items():
            assert_close(model.params[name], p, np.float64, name)


def test_state_is_carried_per_shard_across_windows(dask_client):
    """Each replica carries its streams' recurrent state from window to window (and drops it
    at the start of a pass, as one process does): the state of the whole batch, gathered from
    the shards, equals one process's after every step."""
    from fastbptt.nn.distributed import DataParallel
    ids = IDS[:4 * 3 * 5 + 1]                        # 4 streams, 3 windows of 5 per pass
    expected = tiny_model("lstm")
    model = tiny_model("lstm")
    with DataParallel(model, ids, client=dask_client, batch=4, seq_len=5, lr=1e-2,
                      clip=None, timeout=60) as dp:
        for n_steps in range(1, 6):
            dp.step()
            _, state = one_process(tiny_model("lstm"), ids, n_steps, batch=4, seq_len=5,
                                   lr=1e-2, max_norm=np.inf)
            got = dp.state()
            for layer, st in enumerate(state):
                for key, value in st.items():
                    assert_close(got[layer][key], value, np.float64, f"step {n_steps} {key}")
    del expected


def test_sync_every_averages_parameters_and_converges(dask_client):
    """Local SGD: 4 steps on each replica's shard, then the mean of the parameters. The
    replicas are equal right after an averaging and differ in between; the loss falls well
    below its start on a text of one repeated phrase. Not equal to one process."""
    from fastbptt.nn.distributed import DataParallel
    text = "the cat sat on the mat. " * 60
    vocab = data.CharVocab.from_text(text)
    ids = vocab.encode(text)
    model = Model(len(vocab), 16, len(vocab), cell="gru", input="onehot", dtype=np.float64,
                  seed=0)
    with DataParallel(model, ids, client=dask_client, batch=4, seq_len=8, lr=2e-2,
                      sync_every=4, timeout=60) as dp:
        losses = list(dp.train(8))
        after_sync = dp.replica_params()
        losses += list(dp.train(2))
        between = dp.replica_params()
        losses += list(dp.train(50))
        dp.pull()
    assert all(np.array_equal(after_sync[0][n], after_sync[1][n]) for n in after_sync[0])
    assert not all(np.array_equal(between[0][n], between[1][n]) for n in between[0])
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:4]), losses
    x, y, _ = next(data.Streams(ids, 4, 8))
    assert model.evaluate(x, y)[0] < 0.5 * losses[0]


def test_sweep_runs_configurations_as_tasks(dask_client):
    from fastbptt.nn.distributed import sweep
    seen = []
    assert sweep(np.add, [1, 2, 3], 10, client=dask_client,
                 on_result=lambda i, r: seen.append(i)) == [11, 12, 13]
    assert sorted(seen) == [0, 1, 2]
    with pytest.raises(RuntimeError, match=r"run 1 of the sweep \('x'\) failed"):
        sweep(np.sqrt, [4.0, "x"], client=dask_client)


def test_bad_arguments_name_themselves(dask_client):
    from distributed import Client

    from fastbptt.nn.distributed import DataParallel, connect
    model = tiny_model("rnn")
    for kwargs, message in [({"sync_every": 0}, "sync_every must be an integer >= 1"),
                            ({"batch": 0}, "batch must be an integer >= 1"),
                            ({"optimizer": "rmsprop"}, "optimizer must be one of"),
                            ({"clip": -1.0}, "clip must be >= 0"),
                            ({"batch": 400}, "too few")]:
        options = {"batch": 4, "seq_len": 5, **kwargs}
        with pytest.raises(ValueError, match=message):
            DataParallel(model, IDS, client=dask_client, **options)
    with DataParallel(model, IDS, client=dask_client, batch=4, seq_len=5) as dp:
        with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
            dp.train(3, chunk=0)                       # at the call, before any step
        with pytest.raises(TypeError, match="stops must be a callable or None"):
            dp.train(3, stops=[3])
        assert dp.step_count == 0
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        DataParallel(model, IDS, client="local:2", batch=4, seq_len=5)
    closed = Client(dask_client.scheduler.address)
    closed.close()
    with pytest.raises(ValueError, match="client is not connected"):
        DataParallel(model, IDS, client=closed, batch=4, seq_len=5)
    for spec in ("local:0", "locla:2", "127.0.0.1:8786"):
        with pytest.raises(ValueError, match="cluster"):
            connect(spec)


# ------------------------------------------------------------------------------ the command line
def test_train_on_the_cluster_equals_training_here(text_file, tmp_path, dask_client, capsys):
    """``--cluster tcp://...`` (the running scheduler) gives the model training here gives."""
    address = dask_client.scheduler.address
    common = ["train", "--text", str(text_file), "--steps", "9", "--dtype", "float64",
              "--truncation", "randomized", "--save-every", "3"] + TINY
    assert main(common + ["--out", str(tmp_path / "here")]) == 0
    assert main(common + ["--out", str(tmp_path / "there"), "--cluster", address]) == 0
    printed = capsys.readouterr().out
    assert f"cluster: {address}, 2 workers" in printed and "cluster: 2 replicas" in printed
    here = Model.load(tmp_path / "here" / "model.npz")
    there = Model.load(tmp_path / "there" / "model.npz")
    assert there.metadata["steps"] == 9
    for name, p in here.params.items():
        assert_close(there.params[name], p, np.float64, name)


def test_ctrl_c_on_the_cluster_saves_the_steps_taken(text_file, tmp_path, monkeypatch,
                                                     dask_client, capsys):
    """Ctrl-C while waiting for the chunk of steps 9-16: the chunks already issued (9-16, and
    17-20, which ends at the evaluation of step 20) finish, and the model saved is the one
    after step 20, as training here for 20 steps gives it."""
    from fastbptt.nn.distributed import DataParallel
    finish, chunks = DataParallel._finish, []

    def interrupted(self, issued):
        chunks.append(issued[:2])
        if issued[0] == 9 and chunks.count(issued[:2]) == 1:
            raise KeyboardInterrupt
        return finish(self, issued)

    monkeypatch.setattr(DataParallel, "_finish", interrupted)
    common = ["train", "--text", str(text_file), "--dtype", "float64"] + TINY
    rc = main(common + ["--steps", "50", "--eval-every", "20", "--out", str(tmp_path / "there"),
                        "--cluster", dask_client.scheduler.address])
    assert rc == 130
    assert "interrupted at step 20" in capsys.readouterr().err
    assert chunks == [(1, 8), (9, 16), (9, 16), (17, 20)]
    assert main(common + ["--steps", "20", "--out", str(tmp_path / "here")]) == 0
    here = Model.load(tmp_path / "here" / "model.npz")
    there = Model.load(tmp_path / "there" / "model.npz")
    assert there.metadata["steps"] == 20
    for name, p in here.params.items():
        assert_close(there.params[name], p, np.float64, name)


def test_compare_truncation_runs_as_tasks_on_the_cluster(text_file, tmp_path, dask_client,
                                                         capsys):
    common = ["train", "--text", str(text_file), "--compare-truncation", "--steps", "6",
              "--k", "2", "--p", "0.5", "--dtype", "float64"] + TINY
    assert main(common + ["--out", str(tmp_path / "here")]) == 0
    assert main(common + ["--out", str(tmp_path / "there"), "--cluster",
                          dask_client.scheduler.address]) == 0
    assert "as tasks on the cluster" in capsys.readouterr().out
    table = (tmp_path / "there" / "compare.txt").read_text()
    for label in ("full BPTT", "regular (K=2)", "randomized (p=0.5)", "unigram baseline"):
        assert label in table
    for strategy in ("full", "chunked", "randomized"):
        here = Model.load(tmp_path / "here" / f"model-{strategy}.npz")
        there = Model.load(tmp_path / "there" / f"model-{strategy}.npz")
        for name, p in here.params.items():
            assert_close(there.params[name], p, np.float64, f"{strategy} {name}")


KILL_AT_STEP = """
import os, signal
from fastbptt.nn.distributed import _Replica
_step = _Replica._step
def _step_or_die(self, step, xi):
    if step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(self, step, xi)
_Replica._step = _step_or_die
"""


@pytest.mark.parametrize("linked", [True, False])
def test_a_killed_worker_fails_the_step_and_resume_continues(linked, text_file, tmp_path,
                                                              monkeypatch, dask_client, capsys):
    """``--cluster local:2``: a worker dies in the middle of the chunk of steps 5-8 (killed as
    it starts step 7), with the replicas exchanging over their own sockets or through Dask's
    comms; the chunk fails with an error naming the worker; model.npz, saved every 4 steps,
    loads; ``--resume`` (on another cluster) trains on from it to ``--steps``."""
    import fastbptt.cli.train as train_command
    from fastbptt.nn import distributed
    if not linked:
        monkeypatch.setattr(distributed, "_host", unlinked)
    killed = []
    start = train_command.ClusterTrainer.start

    def start_and_arm(self):
        parallel = start(self)
        assert parallel.linked == linked
        address = parallel.workers[1]
        self.client.run(exec, KILL_AT_STEP.format(step=7), {}, workers=[address])
        killed.append(address)
        return parallel

    monkeypatch.setattr(train_command.ClusterTrainer, "start", start_and_arm)
    out = tmp_path / "run"
    argv = ["train", "--text", str(text_file), "--steps", "12", "--save-every", "4",
            "--out", str(out)] + TINY
    rc = exit_status(argv + ["--cluster", "local:2"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"worker {killed[0]}" in err and "left the cluster during steps 5-8" in err, err
    assert "step 5 failed" in err, err
    assert "holds the model saved at step 4: continue with --resume" in err, err
    assert Model.load(out / "model.npz").metadata["steps"] == 4

    monkeypatch.setattr(train_command.ClusterTrainer, "start", start)
    rc = exit_status(argv + ["--resume", "--cluster", dask_client.scheduler.address])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "resuming from" in printed.out
    resumed = Model.load(out / "model.npz")
    assert resumed.metadata["steps"] == 12 and np.isfinite(resumed.metadata["val_loss"])
    rows = (out / "loss.csv").read_text().splitlines()
    assert [int(r.split(",")[1]) for r in rows[1:]] == [4, 8, 12]


# ------------------------------------------------------------------------------ without Dask
def run_python(code):
    """Run ``code`` in a fresh interpreter importing this fastbptt."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


def test_without_cluster_dask_is_not_imported(text_file, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from fastbptt.cli import main
        assert main(["train", "--text", {str(text_file)!r}, "--steps", "3",
                     "--out", {str(tmp_path / "run")!r}] + {TINY!r}) == 0
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")
                        or m == "fastbptt.nn.distributed")
        assert not loaded, loaded
    """)
    done = run_python(code)
    assert done.returncode == 0, done.stderr


def test_without_dask_cluster_names_the_extra(text_file, tmp_path):
    """In a fresh interpreter where ``import distributed`` fails (a running cluster in this
    one would not survive that)."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["distributed"] = None                  # import distributed -> ImportError
        from fastbptt.cli import main
        sys.exit(main(["train", "--text", {str(text_file)!r}, "--cluster", "local:2",
                       "--out", {str(tmp_path / "x")!r}] + {TINY!r}))
    """)
    done = run_python(code)
    assert done.returncode == 2
    assert "--cluster needs Dask" in done.stderr
    assert "pip install 'fastbptt[dask]'" in done.stderr
    done = run_python("import sys; sys.modules['distributed'] = None; "
                      "import fastbptt.nn.distributed")
    assert "ImportError: fastbptt.nn.distributed needs" in done.stderr
    assert "pip install 'fastbptt[dask]'" in done.stderr


def test_save_every_and_resume_on_one_process(text_file, tmp_path, capsys):
    """``--save-every`` and ``--resume`` need no cluster: a run stopped at step 4 and resumed
    to 8 ends at step 8 with the loss curve of both parts; a resume with other model options
    is refused."""
    out = tmp_path / "run"
    argv = ["train", "--text", str(text_file), "--save-every", "2", "--out", str(out)] + TINY
    assert main(argv + ["--steps", "4"]) == 0
    assert Model.load(out / "model.npz").metadata["steps"] == 4
    assert main(argv + ["--steps", "8", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "trained 4 more steps (to step 8)" in printed
    assert Model.load(out / "model.npz").metadata["steps"] == 8
    rows = (out / "loss.csv").read_text().splitlines()
    assert [int(r.split(",")[1]) for r in rows[1:]] == [4, 8]
    assert exit_status(argv + ["--steps", "10", "--resume", "--hidden", "9"]) == 2
    assert "--resume:" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--cluster", "localhost"], "argument --cluster: must be local:N or tcp://HOST:PORT"),
    (["--cluster", "local:0"], "argument --cluster: local:N needs N >= 1"),
    (["--cluster", "local:2", "--sync-every", "0"], "argument --sync-every: must be at least 1"),
    (["--sync-every", "2"], "--sync-every goes with --cluster"),
    (["--cluster", "local:2", "--truncation", "tbptt"], "drop --cluster"),
    (["--resume", "--compare-truncation"], "drop --compare-truncation"),
    (["--resume"], "--resume: there is no"),
])
def test_bad_cluster_options_give_a_clear_message(argv, message, text_file, tmp_path, capsys):
    """All refused before any cluster starts."""
    rc = exit_status(["train", "--text", str(text_file), "--out", str(tmp_path / "x")] + argv)
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "error" in err
