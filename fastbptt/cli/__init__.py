"""The ``fastbptt`` command line: ``fastbptt train``, ``fastbptt bench``, ``fastbptt gradflow``.

Each command is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``.
The command word is read first and only that command's module is imported, to build its own
parser: ``fastbptt bench`` needs nothing beyond NumPy and SciPy, and neither it nor
``fastbptt bench --help`` imports the model layer or the other commands.
"""
import argparse
import importlib

from .. import __version__
from ._options import UsageError

COMMANDS = {   # the module fastbptt.cli.<name> of each command, and what it does
    "train": "train a character-level model with truncated BPTT",
    "bench": "time the kernels against the NumPy reference, side by side",
    "gradflow": "plot vanishing and exploding gradients through time",
}


def main(argv=None):
    """Run ``fastbptt`` with the arguments ``argv`` (default: the command line's); returns the
    exit status. Bad options exit through argparse, with status 2."""
    parser = argparse.ArgumentParser(prog="fastbptt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fastbptt {__version__}",
                        help="print fastbptt's version and exit (fastbptt.show_config() "
                             "has the build, BLAS and threads)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        # a placeholder: everything after the command word is left for the command's parser
        commands.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        parser.print_help()
        return 2
    module = importlib.import_module(f"{__name__}.{args.command}")
    help_text = COMMANDS[args.command]
    command_parser = argparse.ArgumentParser(prog=f"{parser.prog} {args.command}",
                                             description=help_text)
    module.add_arguments(command_parser)
    command_args = command_parser.parse_args(rest)
    try:
        return module.run(command_args)
    except UsageError as err:
        command_parser.error(str(err))
