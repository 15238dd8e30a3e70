"""The one place that allocates what a cell's forward and backward return or keep.

The checks (``_validation``) only check; these functions make the arrays a call writes: new
ones, or with ``out=`` those of an earlier cache or result, refilled. Kernels and reference use
the same ones, so both hand back arrays of the same layouts.
"""
import numpy as np

from ._caches import JordanCache
from ._layout import empty_steps, swap_major


def initial_states(inputs, out):
    """The initial states the cache will own, {'h0': (N, H), 'c0': ...}: copies of the
    caller's (a stream loop may change its array in place, or pass a view of the cache's own
    final state with out=, before backward reads it), zeros where None; with ``out``, that
    cache's arrays refilled."""
    shape, dtype = (inputs.n_batch, inputs.n_hidden), inputs.dtype
    owned = {}
    for name, value in inputs.states.items():
        if out is not None:
            owned[name] = getattr(out, name)
            if value is None:
                owned[name].fill(0)
            else:
                np.copyto(owned[name], value)
        elif value is None:
            owned[name] = np.zeros(shape, dtype)
        else:
            owned[name] = np.array(value, order="C")
    return owned


def step_outputs(cache_type, inputs, out):
    """Forward's per-step arrays (``cache_type.outputs``: h and, per cell, c, gates, ...), each
    C-contiguous in the caller's layout: new, or ``out``'s, to be overwritten."""
    if out is not None:
        return {name: swap_major(getattr(out, name), inputs.time_major)
                for name in cache_type.outputs}
    # empty_steps written out: this runs on every forward
    n_steps, n_batch, n_hidden = inputs.n_steps, inputs.n_batch, inputs.n_hidden
    rows = (n_steps, n_batch) if inputs.time_major else (n_batch, n_steps)
    return {name: np.empty((*rows, width * n_hidden), inputs.dtype)
            for name, width in cache_type.outputs.items()}


def make_cache(cache_type, out, inputs, states, outputs, **extra):
    """A new cache of ``cache_type`` holding this forward's arrays, or ``out`` refilled."""
    tm = inputs.time_major
    by_step = {name: swap_major(arr, tm) for name, arr in outputs.items()}
    by_step["x"] = inputs.x
    if out is None:
        return cache_type(tm, inputs.weights, states, extra, by_step)
    out._fill(inputs.weights, states, extra, by_step)
    return out


def backward_buffers(cell, cache, inputs, written=False):
    """The arrays a backward writes: (dx, state gradients, weight gradients).

    dx : in x's layout, new or ``out.dx``; every element is written by the backward.
    state gradients : {'dhT': (N, H), and 'dcT' for the LSTM}, new or ``out``'s dh0 (dc0),
        holding the gradient into the final states (zeros where None): backward carries it
        back to the initial states in place.
    weight gradients : {'dWx', 'dWh', 'db' and the extra ones}: ``grads``' arrays to add into
        (as the checks returned them), else ``out``'s, else new ones (``weight_grad_buffers``):
        with ``written`` (a kernel will write every element) as they are, else zeros.

    With ``overwrite_cache``, this marks the cache consumed, now that every check has passed
    and the backward may start writing over it; kernels and reference then refuse a second
    backward alike."""
    out = inputs.out
    if inputs.overwrite_cache:
        cache._consume()
    dtype = cache.dtype
    if out is not None:
        for name, value in inputs.final.items():
            carry = getattr(out, state_grad_name(name))
            if value is None:
                carry.fill(0)
            else:
                np.copyto(carry, value)
        carries = {name: getattr(out, state_grad_name(name)) for name in inputs.final}
        return out.dx, carries, weight_grad_buffers(cell, cache, inputs.grads, out, written)
    n_steps, n_batch, n_input = cache.x.shape
    dx = np.empty((n_steps, n_batch, n_input) if cache.time_major
                  else (n_batch, n_steps, n_input), dtype)
    shape = cache.h0.shape
    carries = {name: np.zeros(shape, dtype) if value is None else np.array(value, order="C")
               for name, value in inputs.final.items()}
    return dx, carries, weight_grad_buffers(cell, cache, inputs.grads, None, written)


def state_grad_name(final):
    """The result's name of the gradient that backward carries from ``final`` to the initial
    state: 'dhT' -> 'dh0'."""
    return final[:-1] + "0"


def weight_grad_buffers(cell, cache, grads=None, out=None, written=False):
    """The arrays backward puts weight gradients in, {'dWx': ..., 'dWh': ..., 'db': ..., and
    the extra ones}: ``grads``' (the dict the checks returned), which it adds into; else those
    of ``out`` (an earlier result, checked), else new ones. ``written``: the caller's kernel
    writes every element of them (``write_weight_grads``, as a BLAS product with beta = 0), so
    they are left as they are (new ones uninitialised); else they are set to zero, for a
    backward that adds into them (the reference, a checkpointed backward's segments) or for
    none at all (no sequence, or no step, to run)."""
    if grads is not None:
        return grads
    if out is not None:
        arrays = {name: getattr(out, name) for name in cell.weight_grads}
        if not written:
            for arr in arrays.values():
                arr.fill(0)
        return arrays
    # np.zeros, not np.zeros_like, which costs more than the rest of this on short sequences
    fields, dtype, new = cache.__dict__, cache.dtype, np.empty if written else np.zeros
    return {grad: new(fields[weight].shape, dtype)
            for grad, weight in zip(cell.weight_grads, cell.weights)}


def kernel_buffers(kernels, cache, shared=True):
    """The arrays of ``cache`` as the compiled ``kernels`` read them, by name: a
    ``kernels.Buffers`` (``src/_held.pxd``), which also holds the kernels' workspaces. It is made
    by the first kernel call on the cache (and again by one from another build of the kernels)
    and kept on the cache; each later call, a backward or a forward refilling the cache with
    out=, holds again only what that forward replaced (the caller's x and weights), found by
    identity, so a loop over chunks allocates nothing after its first. Only once after each
    fill (``_fills`` counts them): a backward on a cache no forward refilled since holds it as
    it was.

    ``shared`` False (another thread's backward holds the cache's, ``fastbptt._sharing``): a
    new one for this call alone, with workspaces of its own."""
    if not shared:
        return kernels.Buffers(cache)
    fields = cache.__dict__
    buffers = fields.get("_buffers")
    if type(buffers) is kernels.Buffers:
        if fields["_held"] != fields["_fills"]:
            buffers.refresh(cache)
            fields["_held"] = fields["_fills"]
    else:
        buffers = fields["_buffers"] = kernels.Buffers(cache)
        fields["_held"] = fields["_fills"]
    return buffers


def jordan_forward_buffers(inputs, out):
    """What ``jordan_forward`` writes: (y0, h, y). y0 (N, O) is the cache's copy of the caller's
    (zeros where None); h (N, H per step) and y (N, O per step) are C-contiguous in the caller's
    layout. New arrays, or with ``out`` that cache's, refilled (y0) or to be overwritten."""
    shape, dtype = (inputs.n_batch, inputs.n_output), inputs.dtype
    if out is not None:
        y0 = out.y0
        if inputs.y0 is None:
            y0.fill(0)
        else:
            np.copyto(y0, inputs.y0)
        tm = inputs.time_major
        return y0, swap_major(out.h, tm), swap_major(out.y, tm)
    y0 = np.zeros(shape, dtype) if inputs.y0 is None else np.array(inputs.y0, order="C")
    h, y = (empty_steps(inputs.n_steps, inputs.n_batch, width, dtype, inputs.time_major)
            for width in (inputs.n_hidden, inputs.n_output))
    return y0, h, y


def make_jordan_cache(out, inputs, y0, h, y, nonlinearity, output_nonlinearity):
    """A new Jordan cache of this forward's arrays (h and y in the caller's layout), or ``out``
    refilled."""
    tm = inputs.time_major
    fields = dict(inputs.weights, x=inputs.x, y0=y0, h=swap_major(h, tm), y=swap_major(y, tm),
                  nonlinearity=nonlinearity, output_nonlinearity=output_nonlinearity)
    if out is None:
        return JordanCache(tm, fields)
    out._fill(fields)
    return out


def jordan_backward_buffers(cache, inputs, written=False):
    """What ``jordan_backward`` writes: (dx, carry, weight gradients).

    dx : in x's layout, new or ``out.dx``; every element is written.
    carry : (N, O), new or ``out.dy0``, holding dyT (zeros where None): backward carries it back
        to dL/dy0 in place.
    weight gradients : {'dWx', 'dWy', 'db', 'dWo', 'dbo'}: ``grads``' arrays to add into, else
        ``out``'s, else new ones: with ``written`` (the kernel writes every element) as they
        are, else zeros.

    With ``overwrite_cache``, this marks the cache consumed, now that every check has passed."""
    out, dtype = inputs.out, cache.dtype
    if inputs.overwrite_cache:
        cache._consume()
    n_batch, n_output = cache.y0.shape
    if out is not None:
        dx, carry = out.dx, out.dy0
        if inputs.dyT is None:
            carry.fill(0)
        else:
            np.copyto(carry, inputs.dyT)
    else:
        n_steps, n_batch, n_input = cache.x.shape
        dx = np.empty((n_steps, n_batch, n_input) if cache.time_major
                      else (n_batch, n_steps, n_input), dtype)
        carry = (np.zeros((n_batch, n_output), dtype) if inputs.dyT is None
                 else np.array(inputs.dyT, order="C"))
    if inputs.grads is not None:
        return dx, carry, inputs.grads
    fields = cache.__dict__
    if out is not None:
        grads = {"d" + name: getattr(out, "d" + name) for name in ("Wx", "Wy", "b", "Wo", "bo")}
        if not written:
            for arr in grads.values():
                arr.fill(0)
        return dx, carry, grads
    new = np.empty if written else np.zeros
    return dx, carry, {"d" + name: new(fields[name].shape, dtype)
                       for name in ("Wx", "Wy", "b", "Wo", "bo")}
