"""What the commands share to read their options: argparse ``type=`` functions and the error
for options that do not go together.

A ``type=`` function turns one option's text into its value or raises
``argparse.ArgumentTypeError``; argparse then prints ``fastbptt CMD: error: argument --OPTION:
MESSAGE`` with the usage and exits with status 2. What one option cannot check alone (``--k``
without ``--truncation chunked``, K1 <= K2) a command raises as a ``UsageError``, which
``fastbptt.cli.main`` reports the same way, and so is a run that would not fit in the machine's
memory (``check_memory``): every such error comes before any work.
"""
import argparse
import math
import os


class UsageError(ValueError):
    """Options that do not go together; the message names them."""


def _parser(convert, kind, ok, what, name):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = f"The option's value as {kind}, {what}."
    return parse


def at_least(minimum):
    """A ``type=`` for an integer option of at least ``minimum``."""
    return _parser(int, "an integer", lambda v: v >= minimum, f"at least {minimum}",
                   f"at_least_{minimum}")


positive_int = at_least(1)
non_negative_int = _parser(int, "an integer", lambda v: v >= 0, ">= 0", "non_negative_int")
positive_float = _parser(float, "a number", lambda v: 0 < v < math.inf, "positive and finite",
                         "positive_float")
non_negative_float = _parser(float, "a number", lambda v: 0 <= v < math.inf, ">= 0 and finite",
                             "non_negative_float")
finite_float = _parser(float, "a number", math.isfinite, "a finite number", "finite_float")
probability = _parser(float, "a number", lambda v: 0 < v <= 1, "in (0, 1]", "probability")
fraction = _parser(float, "a number", lambda v: 0 < v < 1, "between 0 and 1 (both excluded)",
                   "fraction")


def checkpoint_steps(text):
    """``--checkpoint``'s value: 'sqrt' or a positive integer K (steps per segment)."""
    if text == "sqrt":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'sqrt' or a positive integer, got {text!r}") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 'sqrt' or a positive integer, got {text}")
    return value


def existing_file(text):
    """The option's value as the path of a file that exists."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def names_among(choices, what):
    """A ``type=`` for a comma-separated list of names among ``choices`` (e.g. cells), each
    called a ``what`` in the message when it is not one of them."""
    choices = tuple(choices)

    def parse(text):
        names = [name for name in text.split(",") if name]
        for name in names:
            if name not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {name!r}; choose among {', '.join(choices)}")
        return names
    parse.__name__ = parse.__qualname__ = f"{what}_names"
    return parse


def physical_memory():
    """The machine's physical memory in bytes, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what, n_bytes):
    """A ``UsageError`` where ``n_bytes``, what the options given as ``what`` need (an estimate),
    is more than the machine's physical memory: refused before any work rather than failing
    with a MemoryError after it."""
    total = physical_memory()
    if total is not None and n_bytes > total:
        raise UsageError(f"{what} need about {n_bytes / 2**30:,.1f} GiB, more than this "
                         f"machine's {total / 2**30:,.1f} GiB of memory")
