"""The ``verl-spro`` command: what users need around training (checks, data preparation, demo, benchmark).

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules keep heavy imports (torch, verl, ray) inside ``run`` so that ``verl-spro --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from verl_spro import __version__
from verl_spro.quiet import quiet_verl_import_noise

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("verl_spro.demo", "SPRO vs GRPO on a tiny LM and a verifiable task, on the CPU, with plots"),
    "sweep": ("verl_spro.sweep", "pre-registered SPRO vs GRPO sweep over answer length and beta, on the CPU"),
    "bench": ("verl_spro.bench", "time and memory of the estimator against verl's grpo (CSV + PNG)"),
    "check": ("verl_spro.preflight", "preflight check of a training config before it costs an allocation"),
    "prepare-data": ("verl_spro.data_prep", "turn JSONL/parquet math and code problems into verl's parquet schema"),
    "smoke": ("verl_spro.smoke", "verl's real main_ppo end to end on this CPU: a tiny model, N steps, checkpoints"),
}


#: subcommand -> what it needs from the ``[tools]`` extra beyond the plain install (which has what training needs).
TOOLS_EXTRA: dict[str, tuple[str, ...]] = {"demo": ("matplotlib",), "sweep": ("matplotlib",), "bench": ("matplotlib",)}


def missing_tools(command: str) -> str | None:
    """Why ``command`` cannot run in this environment (its ``[tools]`` packages are absent), in one line, or None."""
    missing = [name for name in TOOLS_EXTRA.get(command, ()) if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"verl-spro {command} needs {', '.join(missing)}, which the plain install leaves out (it has what training "
        'needs): pip install "verl-spro[tools]"'
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verl-spro",
        description="SPRO for verl: train with `python -m verl.trainer.main_ppo algorithm.adv_estimator=spro ...`.",
    )
    parser.add_argument("--version", action="version", version=f"verl-spro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    problem = missing_tools(args.command)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    # Importing verl on a CPU box warns about every optional engine it lacks and about the missing GPU: noise here.
    quiet_verl_import_noise()
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
