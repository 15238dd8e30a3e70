"""The ``fastbptt`` command line: ``fastbptt bench``, ``fastbptt train``, ``fastbptt gradflow``.

Each subcommand is a module of the package with ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when asked for, so ``fastbptt bench`` needs nothing beyond NumPy and SciPy.
"""
import argparse
import importlib

SUBCOMMANDS = {
    "bench": ("fastbptt.cli.bench", "time the kernels against the NumPy reference, side by side"),
    "train": ("fastbptt.cli.train", "train a character-level model with truncated BPTT"),
    "gradflow": ("fastbptt.cli.gradflow", "plot vanishing and exploding gradients through time"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastbptt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # not built yet in this checkout
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return modules[args.command].run(args)

