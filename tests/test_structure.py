"""The package's structure, as DESIGN.md draws its layers, each rule a test.

- ``import fastbptt.reference`` loads no compiled module, and the reference runs from a copy of
  the package's ``.py`` files with no extension built (the kernels there say how to build them);
- the reference does not import the TBPTT driver it is used to test;
- no cell is found by building a name from a string (``getattr(module, f"{cell}_forward")``):
  the package goes through the cell registry;
- nothing below the command line imports it, and ``benchmarks/`` imports no command;
- the two registries describe the same cells, bound to the public functions, whose signatures
  are what the records say.

The source rules read the files' syntax trees (``ast``), so they see imports that never run
in the tests; the runtime rules run a fresh interpreter.
"""
import ast
import dataclasses
import inspect
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import types
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, make_problem

import fastbptt
import fastbptt.reference as ref
from fastbptt._cells import Cell

PACKAGE = Path(fastbptt.__file__).resolve().parent      # the fastbptt being tested
ROOT = PACKAGE.parent
BENCHMARKS = ROOT / "benchmarks"
CELLS = list(fastbptt.CELLS)


def relative(path, root=ROOT):
    return path.relative_to(root).as_posix()


def sources(folder):
    """Every .py file under ``folder``."""
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


# -- reading imports from the source -----------------------------------------------------------

def _package_of(path, root=ROOT):
    """The package a file's relative imports start from: 'fastbptt.reference' for
    fastbptt/reference/rnn.py and for fastbptt/reference/__init__.py; '' outside fastbptt/."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[0] == "fastbptt" else ""


def _resolve(module, level, package):
    if not level:
        return module
    base = package.split(".")[:len(package.split(".")) - (level - 1)] if package else []
    return ".".join(base + ([module] if module else []))


def _call_name(func):
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def imports(source, package=""):
    """(line, module) for every module ``source`` imports, by its absolute name: ``import a.b``
    gives a.b; ``from a import b`` gives a and a.b (b may be a module); relative imports are
    resolved from ``package``; ``importlib.import_module``/``__import__`` of a literal name
    count too."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node.module, node.level, package)
            yield node.lineno, module
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{module}.{alias.name}"
        elif (isinstance(node, ast.Call)
              and _call_name(node.func) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            yield node.lineno, _resolve(name.lstrip(".") or None, level, package)


def file_imports(path, root=ROOT):
    return imports(path.read_text(encoding="utf-8"), _package_of(path, root))


def in_modules(module, names):
    """True if ``module`` is one of ``names`` or inside one of them."""
    return any(module == name or module.startswith(name + ".") for name in names)


# -- finding a cell by a name built from a string ----------------------------------------------

# calls that look a name up: the name argument's position
NAME_LOOKUPS = {"getattr": 1, "hasattr": 1, "setattr": 1, "delattr": 1, "import_module": 0,
                "__import__": 0}


def _string_parts(node):
    """(literal parts, formatted expressions) of a string built at run time: an f-string,
    ``"..." + x``, ``"..." % x`` or ``"...".format(x)``; None for anything else."""
    if isinstance(node, ast.JoinedStr):
        return ([v.value for v in node.values if isinstance(v, ast.Constant)],
                [v.value for v in node.values if isinstance(v, ast.FormattedValue)])
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        literals, exprs = [], []
        for side in (node.left, node.right):
            inner = _string_parts(side)
            if inner is not None:
                literals += inner[0]
                exprs += inner[1]
            elif isinstance(side, ast.Constant) and isinstance(side.value, str):
                literals.append(side.value)
            else:
                exprs.append(side)
        return (literals, exprs) if literals else None
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format" and isinstance(node.func.value, ast.Constant)
            and isinstance(node.func.value.value, str)):
        return [node.func.value.value], list(node.args) + [k.value for k in node.keywords]
    return None


def _mentions_cell(expr):
    """True if an expression names a cell: a variable, attribute or key with 'cell' in it."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and "cell" in node.id.lower():
            return True
        if isinstance(node, ast.Attribute) and "cell" in node.attr.lower():
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and "cell" in node.value.lower():
            return True
    return False


def cell_name_dispatch(source):
    """(line, code) of every lookup whose name is built from a string that makes a cell
    function's name (``_forward``, ``_backward``) or formats a cell."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        position = NAME_LOOKUPS.get(_call_name(node.func))
        if position is None or len(node.args) <= position:
            continue
        parts = _string_parts(node.args[position])
        if parts is None:
            continue
        literals, exprs = parts
        if (any(w in text for text in literals for w in ("_forward", "_backward"))
                or any(_mentions_cell(e) for e in exprs)):
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


@pytest.mark.parametrize("code", [
    'getattr(module, f"{cell}_forward")',
    'getattr(fastbptt, f"{c}_backward")(dh, cache)',
    'hasattr(self._module, f"{cell}_{name}")',
    "getattr(module, f\"{c['cell']}_forward\")",
    'getattr(module, cell + "_forward")',
    'getattr(module, "%s_backward" % name)',
    'getattr(module, "{}_forward".format(kind))',
    'importlib.import_module(f"fastbptt.{cell}")',
])
def test_the_dispatch_scan_sees_string_dispatch(code):
    assert [line for line, _ in cell_name_dispatch(code)] == [1]


@pytest.mark.parametrize("code", [
    'getattr(res, f"d{s}0")',                              # a state's name, from the record
    'getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")',
    'importlib.import_module(f"fastbptt.{name}_avx2")',    # a kernel build
    'getattr(grads, "dbh", None)',
    'record.forward(*args)',
    'f"cache comes from {cell}_forward"',                   # a message, not a lookup
])
def test_the_dispatch_scan_passes_what_is_not_dispatch(code):
    assert cell_name_dispatch(code) == []


def test_the_import_scan_resolves_every_form():
    code = textwrap.dedent("""
        import fastbptt.bench
        from fastbptt import train
        from . import gradflow
        from ..cli import main
        from .tbptt import TBPTT
        import importlib
        importlib.import_module("fastbptt.cli.bench")
        """)
    found = {module for _, module in imports(code, package="fastbptt.reference")}
    assert {"fastbptt.bench", "fastbptt.train", "fastbptt.reference.gradflow", "fastbptt.cli",
            "fastbptt.cli.main", "fastbptt.reference.tbptt", "fastbptt.cli.bench"} <= found
    found = {module for _, module in imports("from .. import tbptt", package="fastbptt.reference")}
    assert "fastbptt.tbptt" in found


# -- the reference imports nothing compiled, and runs without a build --------------------------

def run_python(code, pythonpath, cwd, no_site=False):
    """Run ``code`` in a fresh interpreter with exactly ``pythonpath`` before the standard
    library (and, with ``no_site``, no site-packages and no .pth hooks such as an editable
    install's); return what it printed, parsed as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    cmd = [sys.executable] + (["-S"] if no_site else []) + ["-c", textwrap.dedent(code)]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# prints the compiled modules of the fastbptt package loaded so far: those whose file is an
# extension module under the package's folder, or that an extension loader loaded
COMPILED = """
    import importlib.machinery, json, os, sys

    def compiled_modules():
        folder = os.path.dirname(os.path.realpath(fastbptt.__file__))
        found = []
        for name, module in list(sys.modules.items()):
            path = os.path.realpath(getattr(module, "__file__", None) or "")
            loader = getattr(module, "__loader__", None)
            if (path.startswith(folder + os.sep)
                    and path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)
                                      + (".so", ".pyd"))
                    or name.split(".")[0] == "fastbptt"
                    and isinstance(loader, importlib.machinery.ExtensionFileLoader)):
                found.append(name)
        return sorted(found)
"""


def test_importing_the_reference_loads_no_compiled_module(tmp_path):
    """In a fresh interpreter, ``import fastbptt.reference`` (and a reference call) leaves no
    compiled fastbptt module in sys.modules; a kernel call then loads one, which shows that the
    check sees them."""
    code = COMPILED + """
    import numpy as np
    import fastbptt.reference as ref
    import fastbptt
    after_import = compiled_modules()
    x, h0 = np.ones((2, 3, 4)), np.zeros((2, 5))
    Wx, Wh, b = np.full((4, 5), 0.1), np.full((5, 5), 0.1), np.zeros(5)
    _, cache = ref.rnn_forward(x, h0, Wx, Wh, b)
    ref.rnn_backward(np.ones((2, 3, 5)), cache)
    after_reference = compiled_modules()
    fastbptt.rnn_forward(x, h0, Wx, Wh, b)
    after_kernels = compiled_modules()
    print(json.dumps({"file": fastbptt.__file__, "import": after_import,
                      "reference": after_reference, "kernels": after_kernels}))
    """
    seen = run_python(code, [ROOT], cwd=tmp_path)
    assert Path(seen["file"]).resolve().parent == PACKAGE     # the package under test
    assert seen["import"] == [], seen["import"]
    assert seen["reference"] == [], seen["reference"]
    assert any(name.startswith("fastbptt._rnn") for name in seen["kernels"]), seen["kernels"]


def copy_python_sources(dest):
    """A copy of the package's .py files alone (no extension module) under ``dest``."""
    for src in sources(PACKAGE):
        target = dest / "fastbptt" / src.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    copied = [p for p in (dest / "fastbptt").rglob("*") if p.is_file()]
    assert copied and all(p.suffix == ".py" for p in copied)
    assert not any(str(p).endswith(tuple(EXTENSION_SUFFIXES)) for p in copied)


def test_the_reference_runs_from_the_python_files_alone(tmp_path):
    """From a copy of the package's .py files with no extension built, and no site-packages
    (so no installed or editable fastbptt can stand in): every cell of fastbptt.reference.CELLS
    runs forward and backward and gives what the reference gives here, bit for bit; each
    kernel function raises an ImportError that names the build step."""
    copy_python_sources(tmp_path / "src")
    problems = {}
    for cell in CELLS:
        args, kwargs, dh = make_problem(cell, 2, 4, 3, 5)
        problems[cell] = (args, kwargs, dh)
    (tmp_path / "problems.pkl").write_bytes(pickle.dumps(problems))
    code = COMPILED + """
    import pickle
    import fastbptt
    import fastbptt.reference as ref

    problems = pickle.loads(open("problems.pkl", "rb").read())
    results, errors = {}, {}
    for name, cell in ref.CELLS.items():
        args, kwargs, dh = problems[name]
        h, cache = cell.forward(*args, **kwargs)
        grads = cell.backward(dh, cache)
        names = grads._fields + cell.extra_grads
        results[name] = {"h": h, "hT": cache.hT,
                         **{n: getattr(grads, n) for n in names}}
        for kind, call in (("forward", lambda: fastbptt.CELLS[name].forward(*args, **kwargs)),
                           ("backward", lambda: fastbptt.CELLS[name].backward(dh, cache))):
            try:
                call()
            except ImportError as err:
                errors[f"{name}_{kind}"] = str(err)
            else:
                errors[f"{name}_{kind}"] = None
    try:
        fastbptt.rnn_forward(*problems["rnn"][0])
    except ImportError as err:
        errors["fastbptt.rnn_forward"] = str(err)
    open("results.pkl", "wb").write(pickle.dumps(results))
    print(json.dumps({"file": fastbptt.__file__, "path": sys.path,
                      "compiled": compiled_modules(), "errors": errors}))
    """
    numpy_home = Path(np.__file__).resolve().parent.parent     # numpy, without site's hooks
    seen = run_python(code, [tmp_path / "src", numpy_home], cwd=tmp_path, no_site=True)
    assert Path(seen["file"]).resolve().parent == (tmp_path / "src" / "fastbptt").resolve(), seen
    assert seen["compiled"] == []
    expected_errors = {f"{cell}_{kind}" for cell in CELLS for kind in ("forward", "backward")}
    assert set(seen["errors"]) == expected_errors | {"fastbptt.rnn_forward"}
    for call, message in seen["errors"].items():
        assert message is not None, f"{call} ran without the kernels"
        assert "pip install" in message, (call, message)
    results = pickle.loads((tmp_path / "results.pkl").read_bytes())
    assert set(results) == set(CELLS)
    for cell, (args, kwargs, dh) in problems.items():
        record = ref.CELLS[cell]
        h, cache = record.forward(*args, **kwargs)
        grads = record.backward(dh, cache)
        want = {"h": h, "hT": cache.hT,
                **{n: getattr(grads, n) for n in grads._fields + record.extra_grads}}
        assert set(results[cell]) == set(want), cell
        for name, value in want.items():
            np.testing.assert_array_equal(results[cell][name], value, err_msg=f"{cell} {name}")


def test_the_reference_does_not_import_the_tbptt_driver():
    """fastbptt.reference's modules import neither fastbptt.tbptt nor TBPTT from the package:
    the driver runs the reference through ``TBPTT(impl=fastbptt.reference)``."""
    files = sources(PACKAGE / "reference")
    assert PACKAGE / "reference" / "__init__.py" in files and len(files) > 1
    found = [f"{relative(path)}:{line}: {module}"
             for path in files for line, module in file_imports(path)
             if in_modules(module, ["fastbptt.tbptt"]) or module == "fastbptt.TBPTT"]
    assert not found, "\n".join(found)
    assert not hasattr(ref, "TBPTT") and "TBPTT" not in ref.__all__


def test_no_cell_is_found_by_a_name_built_from_a_string():
    """The package finds a cell through ``impl.CELLS[name]``, never by building its function's
    name (``getattr(module, f"{cell}_forward")``)."""
    files = sources(PACKAGE)
    assert PACKAGE / "_cells.py" in files
    found = [f"{relative(path)}:{line}: {code}"
             for path in files for line, code in cell_name_dispatch(path.read_text("utf-8"))]
    assert not found, "cell found by a name built from a string:\n" + "\n".join(found)


# -- layers: nothing below the command line imports it -----------------------------------------

# The command-line modules: the cli package, and the commands' old homes, which nothing outside
# the command line may import under either name.
COMMANDS = ["fastbptt.cli", "fastbptt.__main__", "fastbptt.train", "fastbptt.gradflow",
            "fastbptt.bench"]
# The files of the command line, which may import one another: the cli package and
# `python -m fastbptt`.
APPLICATION = ["fastbptt/cli/", "fastbptt/__main__.py"]
# The commands still at their old paths, exempt until they move into fastbptt/cli/. Exempt only
# while fastbptt/cli/ does not exist: after the move, a module left at one of these paths (a
# re-export, or the benchmarks' cases) is held to the rule like the rest of the library.
OLD_COMMANDS = ["fastbptt/train.py", "fastbptt/gradflow.py", "fastbptt/bench.py"]


def application_files():
    """The relative paths of the files exempt from the layering rule, as above."""
    return APPLICATION + ([] if (PACKAGE / "cli").is_dir() else OLD_COMMANDS)


def command_imports(paths, exempt=(), root=ROOT):
    """'file:line: imports module' for each import of a command by a file not in ``exempt``
    (``from fastbptt.bench import a, b`` once, as fastbptt.bench)."""
    found = {}
    for path in paths:
        name = relative(path, root)
        if name.startswith(tuple(exempt)):
            continue
        for line, module in file_imports(path, root):
            if in_modules(module, COMMANDS):
                found.setdefault((name, line), module)
    return [f"{name}:{line}: imports {module}" for (name, line), module in sorted(found.items())]


def test_nothing_below_the_command_line_imports_it():
    """No module of the library, the reference, the model layer or the bridges imports the
    command line (fastbptt.cli, or a command at its old path)."""
    files = sources(PACKAGE)
    assert len(files) > len(application_files())
    found = command_imports(files, exempt=application_files())
    assert not found, "\n".join(found)


def test_the_benchmarks_import_no_command():
    """benchmarks/ takes its cases and callables from the library, not from a command."""
    files = sources(BENCHMARKS)
    assert files, f"no benchmarks under {BENCHMARKS}"
    found = command_imports(files)
    assert not found, "\n".join(found)


def test_the_layering_scan_sees_a_command_import(tmp_path):
    """The scan itself: a library module importing a command, by any of its names, is seen."""
    lib = tmp_path / "fastbptt"
    (lib / "cli").mkdir(parents=True)
    (lib / "model.py").write_text("from .cli import train\nfrom . import bench\n")
    (lib / "cli" / "train.py").write_text("from . import bench\nimport fastbptt.train\n")
    found = command_imports(sorted(lib.rglob("*.py")), exempt=APPLICATION, root=tmp_path)
    assert found == ["fastbptt/model.py:1: imports fastbptt.cli",       # cli/ itself: exempt
                     "fastbptt/model.py:2: imports fastbptt.bench"]


# -- the registries ----------------------------------------------------------------------------

DATA_FIELDS = [f.name for f in dataclasses.fields(Cell) if f.name not in ("forward", "backward")]


def test_both_registries_hold_the_same_cells():
    assert list(fastbptt.CELLS) == list(ref.CELLS) and len(CELLS) >= 3
    assert {"name", "n_gates", "states", "extra_weights", "options", "cache_type"} <= set(
        DATA_FIELDS)
    for registry in (fastbptt.CELLS, ref.CELLS):
        assert isinstance(registry, types.MappingProxyType)
        with pytest.raises(TypeError):
            registry["elman"] = registry["rnn"]
        with pytest.raises(dataclasses.FrozenInstanceError):
            registry["rnn"].n_gates = 2


@pytest.mark.parametrize("name", CELLS)
def test_registries_agree_and_hold_the_public_functions(name):
    kernels, reference = fastbptt.CELLS[name], ref.CELLS[name]
    assert kernels.name == reference.name == name
    for field in DATA_FIELDS:
        assert getattr(kernels, field) == getattr(reference, field), field
    # the record's functions are the public ones: fastbptt.<name>_forward, and the reference's
    # own, defined in fastbptt.reference
    for impl, cell in ((fastbptt, kernels), (ref, reference)):
        assert cell.forward is getattr(impl, name + "_forward")
        assert cell.backward is getattr(impl, name + "_backward")
    for fn in (reference.forward, reference.backward):
        assert fn.__module__.startswith("fastbptt.reference."), fn.__module__
    for fn in (kernels.forward, kernels.backward):
        assert not fn.__module__.startswith("fastbptt.reference"), fn.__module__
    assert kernels.cache_type.cell == name


KIND = inspect.Parameter


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("name", HIDDEN_CELLS)
def test_signatures_are_what_the_record_says(impl, name):
    """forward takes x, h0, Wx, Wh, b and, by keyword, exactly the record's extra states,
    extra weights and options, time_major, out, checkpoint, lengths, reverse and check_finite;
    backward takes dh, cache and, by keyword, a gradient into each final state, xi, grads,
    h_grad_norms, overwrite_cache, out and check_finite."""
    cell = impl.CELLS[name]
    params = inspect.signature(cell.forward).parameters.values()
    assert [p.name for p in params if p.kind == KIND.POSITIONAL_OR_KEYWORD] == \
        ["x", "h0", "Wx", "Wh", "b"]
    keywords = {p.name: p for p in params if p.kind == KIND.KEYWORD_ONLY}
    assert tuple(keywords) == (cell.extra_states + cell.extra_weights + tuple(cell.options)
                               + ("time_major", "out", "checkpoint", "lengths",
                                  "reverse", "check_finite"))
    assert len(keywords) + 5 == len(params)                 # no *args, no **kwargs
    for option, allowed in cell.options.items():
        assert keywords[option].default == allowed[0], option
    for extra in cell.extra_states + cell.extra_weights:
        assert keywords[extra].default is None, extra

    params = inspect.signature(cell.backward).parameters.values()
    assert [p.name for p in params if p.kind == KIND.POSITIONAL_OR_KEYWORD] == ["dh", "cache"]
    assert tuple(p.name for p in params if p.kind == KIND.KEYWORD_ONLY) == (
        tuple(f"d{s}T" for s in cell.states)
        + ("xi", "grads", "h_grad_norms", "overwrite_cache", "out", "check_finite"))


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("name", HIDDEN_CELLS)
def test_a_call_built_from_the_record_alone(impl, name, dtype):
    """Arrays shaped by the record alone (``weight_shapes``, a (N, H) array per extra state)
    make a valid call; the cache is the record's cache type with a final value of each state,
    and backward's result has a gradient of each input, in its shape."""
    cell = impl.CELLS[name]
    n_batch, n_steps, n_input, n_hidden = 2, 3, 4, 5
    rng = np.random.default_rng(0)
    weights = {w: (0.3 * rng.standard_normal(shape)).astype(dtype)
               for w, shape in cell.weight_shapes(n_input, n_hidden).items()}
    assert tuple(weights) == cell.weights
    assert weights["Wh"].shape == (n_hidden, cell.n_gates * n_hidden)
    states = {s: rng.standard_normal((n_batch, n_hidden)).astype(dtype)
              for s in cell.extra_states}
    x = rng.standard_normal((n_batch, n_steps, n_input)).astype(dtype)
    h0 = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    h, cache = cell.forward(x, h0, *(weights[w] for w in ("Wx", "Wh", "b")),
                            **{w: weights[w] for w in cell.extra_weights}, **states)
    assert h.shape == (n_batch, n_steps, n_hidden) and h.dtype == dtype
    assert isinstance(cache, cell.cache_type)
    for s in cell.states:
        assert getattr(cache, s + "T").shape == (n_batch, n_hidden), s
    grads = cell.backward(np.ones_like(h), cache)
    assert grads._fields == ("dx", "dh0", "dWx", "dWh", "db")
    assert grads.dx.shape == x.shape and grads.dh0.shape == h0.shape
    for w, dw in zip(cell.weights, cell.weight_grads):
        assert getattr(grads, dw).shape == weights[w].shape, dw
    for extra, d in zip(cell.extra_states + cell.extra_weights, cell.extra_grads):
        given = states[extra] if extra in states else weights[extra]
        assert getattr(grads, d).shape == given.shape and getattr(grads, d).dtype == dtype, d
