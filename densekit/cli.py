"""The ``densekit`` command: ``mine | train | index | search | serve | eval``.

Each subcommand lives in ``densekit/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args)``. Every option can also come from ``--config FILE.yaml``: top-level keys (or keys under
a section named after the subcommand) use the option names, with ``-`` or ``_``; flags given on the
command line win over the file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from pathlib import Path

import densekit.commands
from densekit.errors import ConfigError, DensekitError


def _commands() -> dict[str, object]:
    modules = {}
    for info in pkgutil.iter_modules(densekit.commands.__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"densekit.commands.{info.name}")
            modules[module.NAME] = module
    return modules


def load_yaml_config(path: str, command: str, parser: argparse.ArgumentParser) -> dict:
    import yaml

    config_path = Path(path)
    if not config_path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    if isinstance(data.get(command), dict):
        data = data[command]
    known = {}
    for action in parser._actions:
        if action.dest in ("help", "config"):
            continue
        known[action.dest] = action
        for option in action.option_strings:  # the flag's own name works too: `retriever` for --retriever
            if option.startswith("--"):
                known[option[2:].replace("-", "_")] = action
    other_commands = set(_commands())
    values = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if key in other_commands and isinstance(value, dict):
            continue  # a section for another subcommand
        if dest not in known:
            raise ConfigError(f"{path}: unknown option '{key}' for 'densekit {command}' "
                              f"(known: {', '.join(sorted(known))})")
        action = known[dest]
        if isinstance(action, argparse._AppendAction) and not isinstance(value, list):
            value = [value]
        if action.nargs not in (None, 0) and action.nargs != "?" and isinstance(value, list) is False \
                and isinstance(action.nargs, int):
            raise ConfigError(f"{path}: option '{key}' takes {action.nargs} values")
        if isinstance(action.type, type) and value is not None and not isinstance(value, list):
            try:
                value = action.type(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: option '{key}' expects {action.type.__name__}, got {value!r}") from None
        if action.choices is not None and value not in action.choices and not isinstance(value, list):
            raise ConfigError(f"{path}: option '{key}' must be one of {', '.join(map(str, action.choices))}")
        values[action.dest] = value
    return values


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="densekit", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=os.environ.get("DENSEKIT_LOG", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    subparsers = {}
    for name, module in sorted(_commands().items()):
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--config", help="YAML file with option values (flags on the command line win)")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        subparsers[name] = p
    return parser, subparsers


def _peek_config(argv: list[str], commands: set[str]) -> tuple[str | None, str | None]:
    """The subcommand and its ``--config`` value, found before argparse runs (so YAML can fill required flags)."""
    command = next((a for a in argv if a in commands), None)
    config = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    return command, config


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    command, config = _peek_config(argv, set(subparsers))
    try:
        if command and config:
            sp = subparsers[command]
            values = load_yaml_config(config, command, sp)
            for action in sp._actions:
                if action.dest in values:
                    action.required = False
            sp.set_defaults(**values)
        args = parser.parse_args(argv)
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args._run(args) or 0)
    except DensekitError as exc:
        print(f"densekit {command or ''}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
