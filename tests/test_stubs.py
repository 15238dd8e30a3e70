"""The type stubs (``fastbptt/*.pyi``) say what the code does: the same names, parameters (names,
kinds, which have defaults) and fields, so that a change to a public function that forgets its
stub fails here rather than in a user's type checker. mypy itself runs in CI, on
``tests/typing_example.py`` where the wheel is installed."""
import ast
import inspect
from pathlib import Path

import pytest

import fastbptt
from fastbptt import _caches, _grads

PACKAGE = Path(fastbptt.__file__).resolve().parent
KINDS = {"posonlyargs": inspect.Parameter.POSITIONAL_ONLY,
         "args": inspect.Parameter.POSITIONAL_OR_KEYWORD,
         "kwonlyargs": inspect.Parameter.KEYWORD_ONLY}


def stub(name):
    return ast.parse((PACKAGE / name).read_text(encoding="utf-8"))


def stub_functions(tree):
    """{name: [(parameter, kind, has a default)]} of the stub's top-level functions (the first
    signature of an overloaded one)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name not in out:
            a = node.args
            params = []
            positional = a.posonlyargs + a.args
            n_defaults = len(a.defaults)
            for i, arg in enumerate(positional):
                kind = KINDS["posonlyargs" if arg in a.posonlyargs else "args"]
                params.append((arg.arg, kind, i >= len(positional) - n_defaults))
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                params.append((arg.arg, KINDS["kwonlyargs"], default is not None))
            out[node.name] = params
    return out


def stub_names(tree):
    """Every name the stub binds at its top level."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def runtime_signature(function):
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty)
            for p in inspect.signature(function).parameters.values()]


def test_every_public_name_is_in_the_stub():
    names = stub_names(stub("__init__.pyi"))
    missing = set(fastbptt.__all__) - names
    assert not missing, f"fastbptt/__init__.pyi lacks {sorted(missing)}"
    assert "__version__" in names


FUNCTIONS = sorted(stub_functions(stub("__init__.pyi")))


def test_the_stub_types_the_cell_functions():
    assert {f"{cell}_{kind}" for cell in fastbptt.CELLS for kind in ("forward", "backward")} <= \
        set(FUNCTIONS)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_stub_signatures_match_the_functions(name):
    assert hasattr(fastbptt, name), f"the stub has {name}, fastbptt has not"
    assert stub_functions(stub("__init__.pyi"))[name] == runtime_signature(getattr(fastbptt, name))


def class_attributes(tree, name):
    """The attributes a stub class declares: annotated names, properties and methods."""
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    found = set()
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            found.add(item.target.id)
        elif isinstance(item, ast.FunctionDef):
            found.add(item.name)
    return found


@pytest.mark.parametrize("cell", list(fastbptt.CELLS))
def test_cache_stubs_declare_every_field(cell):
    tree = stub("_caches.pyi")
    cache_type = fastbptt.CELLS[cell].cache_type
    declared = class_attributes(tree, "Cache") | class_attributes(tree, cache_type.__name__)
    assert set(cache_type.fields) <= declared, set(cache_type.fields) - declared
    finals = {state + "T" for state in fastbptt.CELLS[cell].states}
    assert finals <= declared
    assert {"dtype", "consumed", "time_major", "workspace"} <= declared
    for name in declared:
        if not name.startswith("_") and name not in cache_type.fields:
            assert hasattr(cache_type, name) or name in ("consumed", "time_major", "dtype"), name


def test_grads_stub_declares_the_five():
    declared = class_attributes(stub("_grads.pyi"), "Grads")
    assert set(_grads.Grads._fields) <= declared
    assert issubclass(_caches.LSTMCache, _caches.Cache)
