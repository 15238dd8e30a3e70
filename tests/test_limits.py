"""What the kernels cannot count or compute in place is refused before they run: counts past a
32-bit int (tested on arrays whose memory is never touched: zero strides), and calls whose
written arrays share memory with what they read or with each other. Both implementations
refuse alike."""
import json
import os
import re
import textwrap

import numpy as np
import pytest
from conftest import IMPLS, make_problem, run_script

import fastbptt
from fastbptt import _kernels
from fastbptt._validation import INT_MAX, numpy_first_overlap

impls = pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
cells = pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])


COUNT_CASES = [
    ((1, INT_MAX + 2, 1), False, r"x: T = 2147483649 is more than .*at most 2147483647"),
    ((33, 2**26, 1), True, r"x: T \* N \(rows of the products over all steps\) = 2214592512"),
    ((2**26, 33, 1), False, r"x: T \* N"),
    ((INT_MAX + 1, 1, 1), False, r"x: N = 2147483648"),
    ((2, 2**29, 5), False, r"x: T \* D \(batch-major.*pass time_major=True"),
]

# Run in a subprocess whose address space is capped: were a check missing, the kernels would
# copy, allocate or walk arrays of billions of elements, which must fail there, not here.
COUNT_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import numpy as np
    import fastbptt, fastbptt.reference
    def weights(cell, n_input, n_hidden):
        g = fastbptt.CELLS[cell].n_gates
        return (np.ones((n_input, g * n_hidden), np.float32),
                np.zeros((n_hidden, g * n_hidden), np.float32), np.full(g * n_hidden, 0.5,
                                                                          np.float32))
    out = []
    for shape, time_major in json.loads(sys.argv[1]):
        # zero strides: an array of any shape on one float, so these take no memory
        x = np.broadcast_to(np.zeros((1, 1, 1), np.float32), tuple(shape))
        for impl in (fastbptt, fastbptt.reference):
            for cell in ("rnn", "lstm", "gru"):
                try:
                    impl.CELLS[cell].forward(x, None, *weights(cell, shape[2], 1),
                                             time_major=time_major)
                    out.append("ran")
                except ValueError as err:
                    out.append(str(err))
                except MemoryError:
                    out.append("MemoryError")
    n_hidden = 2**29 + 1                       # 4H > 2**31 - 1 for the LSTM
    Wh = np.broadcast_to(np.zeros((1, 1), np.float32), (n_hidden, 4 * n_hidden))
    for impl in (fastbptt, fastbptt.reference):
        try:
            impl.lstm_forward(np.zeros((1, 2, 3), np.float32), None,
                              np.zeros((3, 4), np.float32), Wh, np.zeros(4, np.float32))
        except ValueError as err:
            out.append(str(err))
    print(json.dumps(out))
""")


@pytest.mark.skipif(os.name != "posix", reason="caps the subprocess's address space")
def test_counts_past_a_32_bit_int_are_refused():
    """Before the fix T >= 2**31 wrapped negative and forward returned h barely written, and
    T*N >= 2**31 rows made the hoisted product return at once: now a ValueError naming the
    argument and the limit, before anything is copied (a copy of these would be huge), from
    both implementations and every cell."""
    cases = [[list(shape), time_major] for shape, time_major, _ in COUNT_CASES]
    messages = run_script(COUNT_SCRIPT, json.dumps(cases))
    expected = [match for _, _, match in COUNT_CASES for _ in range(6)]
    expected += [r"Wh: G \* H \(G = 4 gate blocks\) = 2147483652"] * 2
    assert len(messages) == len(expected)
    for message, match in zip(messages, expected):
        assert re.search(match, message), (message, match)


def test_counts_within_the_limit_run():
    """The checks refuse nothing that fits."""
    x = np.zeros((2, 3, 4), np.float32)
    h, _ = fastbptt.rnn_forward(x, None, np.ones((4, 2), np.float32), np.zeros((2, 2),
                                np.float32), np.full(2, 0.5, np.float32))
    np.testing.assert_allclose(h, np.tanh(0.5), rtol=1e-6)


# ------------------------------------------------------------------------- overlapping memory
def _problem(cell, dtype=np.float64, **kw):
    return make_problem(cell, 2, 4, 3, 3, dtype=dtype, **kw)


@impls
@cells
def test_forward_refuses_inputs_that_are_views_of_the_cache_it_refills(impl, cell):
    """rnn_forward(x=h, out=cache) with h from that cache (D = H) was wrong by 0.81: forward
    wrote the states over the input it was reading. Refused before anything is written."""
    args, kwargs, _ = _problem(cell)
    record = impl.CELLS[cell]
    h, cache = record.forward(*args, **kwargs)
    with pytest.raises(ValueError, match=r"out\.h and x overlap in memory"):
        record.forward(cache.h.swapaxes(0, 1), *args[1:], out=cache, **kwargs)
    b_inside_h = h.reshape(-1)[:args[4].size]
    with pytest.raises(ValueError, match=r"out\.h and b overlap in memory"):
        record.forward(*args[:4], b_inside_h, out=cache, **kwargs)
    assert not cache.consumed
    h_again, again = record.forward(*args, out=cache, **kwargs)
    np.testing.assert_array_equal(h_again, record.forward(*args, **kwargs)[0])


@impls
@cells
def test_forward_takes_the_final_state_of_the_cache_it_refills(impl, cell):
    """The stream pattern: h0 = cache.hT (and c0 = cache.cT) with out=cache is copied before the
    cache is refilled, and gives what a fresh forward gives."""
    args, kwargs, _ = _problem(cell)
    record = impl.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    state = {"c0": cache.cT} if cell == "lstm" else {}
    expected, _ = record.forward(args[0], cache.hT.copy(), *args[2:],
                                 **{**kwargs, **{k: v.copy() for k, v in state.items()}})
    got, _ = record.forward(args[0], cache.hT, *args[2:], out=cache, **{**kwargs, **state})
    np.testing.assert_array_equal(got, expected)


@impls
@cells
def test_backward_refuses_grads_that_are_the_caches_weights(impl, cell):
    """grads.dWx being cache.Wx made dx wrong by 16x (RNN): backward adds into dWx before it
    reads Wx for dx. Refused, with the cache and the weights untouched."""
    args, kwargs, dh = _problem(cell)
    record = impl.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    Wx = cache.Wx.copy()
    grads = {name: np.zeros_like(getattr(cache, name[1:])) for name in record.weight_grads}
    grads["dWx"] = cache.Wx
    with pytest.raises(ValueError, match=r"grads\.dWx and cache\.Wx overlap in memory"):
        record.backward(dh, cache, grads=grads)
    np.testing.assert_array_equal(cache.Wx, Wx)
    grads["dWx"] = np.zeros_like(Wx)
    res = record.backward(dh, cache, grads=grads)
    expected = record.backward(dh, cache)
    np.testing.assert_allclose(res.dx, expected.dx)
    np.testing.assert_allclose(grads["dWx"], expected.dWx)


@impls
@cells
def test_backward_refuses_outputs_that_overlap_each_other_or_dh(impl, cell):
    """out= a result whose dh0 lies inside its dWh made every cell wrong; so would dh being the
    dx that out= receives."""
    args, kwargs, dh = make_problem(cell, 3, 4, 3, 3)           # N = D = H = 3
    record = impl.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    res = record.backward(dh, cache)
    fields = dict(res._asdict(), **vars(res))
    fields["dh0"] = res.dWh.reshape(-1)[:9].reshape(3, 3)
    with pytest.raises(ValueError, match=r"out\.dh0 and out\.dWh overlap in memory: this call "
                                         r"writes out\.dh0 and also writes out\.dWh"):
        record.backward(dh, cache, out=fastbptt.Grads(**fields))
    with pytest.raises(ValueError, match=r"out\.dx and dh overlap in memory"):
        record.backward(res.dx, cache, out=res)
    np.testing.assert_array_equal(res.dx, record.backward(dh, cache).dx)   # untouched


@impls
def test_backward_refuses_norms_and_xi_inside_the_gradients(impl):
    args, kwargs, dh = _problem("rnn")
    _, cache = impl.rnn_forward(*args, **kwargs)
    res = impl.rnn_backward(dh, cache)
    with pytest.raises(ValueError, match=r"h_grad_norms and out\.dWh overlap"):
        impl.rnn_backward(dh, cache, out=res, h_grad_norms=res.dWh.reshape(-1)[:4])
    with pytest.raises(ValueError, match=r"out\.dWx and xi overlap"):
        impl.rnn_backward(dh, cache, out=res, xi=res.dWx.reshape(-1)[:4])


def test_the_compiled_overlap_check_agrees_with_numpy():
    """``first_overlap`` (``src/_checks.pyx``) answers as ``np.may_share_memory`` pair by pair,
    on views of every kind: strided, reversed, transposed, empty, disjoint slices."""
    base = np.zeros((6, 8))
    other = np.zeros(5)
    views = {"row0": base[0], "row1": base[1], "col0": base[:, 0], "rev": base[::-1, ::-2],
             "T": base.T, "empty": base[:0], "tail": base[5, 4:], "head": base[0, :4],
             "other": other, "other_rev": other[::-1], "scalar": base[2, 3, None]}
    names = list(views)
    for checks in _kernels.variants("_checks"):
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pair = ([(a, views[a])], [(b, views[b])])
                assert checks.first_overlap(*pair) == numpy_first_overlap(*pair), (a, b)
        writes = [(n, views[n]) for n in ("head", "tail", "other")]
        reads = [(n, views[n]) for n in ("row1", "empty")]
        assert checks.first_overlap(writes, reads) is None
        assert checks.first_overlap(writes, reads + [("T", views["T"])]) == ("head", "T")
        # a write against a later write; an object that is not an ndarray (its buffer)
        assert checks.first_overlap(writes + [("row0", views["row0"])], reads) == ("head",
                                                                                  "row0")
        assert checks.first_overlap([("head", views["head"])],
                                    [("mv", memoryview(base[0]))]) == ("head", "mv")
        assert checks.first_overlap([("head", views["head"])],
                                    [("mv", memoryview(base[1]))]) is None
        # more arrays than the check keeps on its stack (16): the last pair overlaps
        many = [(f"r{i}", np.zeros(3)) for i in range(20)]
        assert checks.first_overlap(writes, many) is None
        assert checks.first_overlap(writes, many + [("row0", views["row0"])]) == ("head",
                                                                                 "row0")


# ------------------------------------------------------------------------- grads as a mapping
@impls
@cells
def test_grads_may_be_a_dict_and_a_dict_without_keys_is_named(impl, cell):
    args, kwargs, dh = _problem(cell)
    record = impl.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    expected = record.backward(dh, cache)
    grads = {name: np.zeros_like(getattr(expected, name) if name != "dbh" else expected.dbh)
             for name in record.weight_grads}
    record.backward(dh, cache, grads=grads)
    for name, value in grads.items():
        np.testing.assert_allclose(value, getattr(expected, name), rtol=1e-12, err_msg=name)
    with pytest.raises(TypeError, match=r"grads is a dict without the key 'dWh': a mapping "
                                        r"needs the keys 'dWx', 'dWh', 'db'"):
        record.backward(dh, cache, grads={"dWx": grads["dWx"]})
    with pytest.raises(TypeError, match=r"got NoneType: pass a Grads"):
        record.backward(dh, cache, grads=object())
