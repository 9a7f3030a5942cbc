"""The ``densekit`` command: ``mine | train | encode | index | search | serve | eval | whiten``.

Each subcommand is a module in ``densekit/commands/`` with ``NAME``, ``HELP``, ``OPTIONS`` (the option
dataclasses it takes, see :mod:`densekit.options`) and ``run(*options)``: a thin driver. Every option can also
come from ``--config FILE.yaml``: top-level keys, or keys under a section named after the subcommand, spelled
as the flag or the field (``-`` or ``_``); flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import densekit.commands
from densekit import options
from densekit.errors import ConfigError, DensekitError

_CONTROL = ("command", "config", "log_level")


def commands() -> dict[str, ModuleType]:
    modules = {}
    for info in pkgutil.iter_modules(densekit.commands.__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"densekit.commands.{info.name}")
            modules[module.NAME] = module
    return modules


def _title(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc and not doc.startswith(cls.__name__ + "(") else cls.__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densekit", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=os.environ.get("DENSEKIT_LOG", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in sorted(commands().items()):
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, allow_abbrev=False)
        p.add_argument("--config", default=None,
                       help="YAML file with option values, flat or under a section per command (flags win)")
        for cls in module.OPTIONS:
            options.add_options(p, cls, _title(cls))
    return parser


def load_config(path: str, command: str) -> dict[str, Any]:
    """The option values a YAML file gives for ``command`` (its section, or its top-level keys)."""
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    except ValueError as exc:  # a value PyYAML cannot build, e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: invalid YAML value ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    if isinstance(data.get(command), dict):
        return dict(data[command])
    others = set(commands())
    return {k: v for k, v in data.items() if not (k in others and isinstance(v, dict))}


def resolve(module: ModuleType, parsed: argparse.Namespace) -> list[Any]:
    """The command's option objects: dataclass defaults < the ``--config`` file < the command line."""
    classes = list(module.OPTIONS)
    layers = []
    if parsed.config:
        layers.append(options.route(load_config(parsed.config, module.NAME), classes, where=f"{parsed.config}: "))
    given = {k: v for k, v in vars(parsed).items() if k not in _CONTROL}
    layers.append(options.route(given, classes))
    merged = {cls: {} for cls in classes}
    for layer in layers:
        for cls, values in layer.items():
            merged[cls].update(values)
    from_file = layers[0] if parsed.config else {}
    # a value the config file gave that __post_init__ refuses: the error names the file too
    return [options.build(cls, merged[cls], where=f"{parsed.config}: " if from_file.get(cls) else "")
            for cls in classes]


def main(argv: list[str] | None = None) -> int:
    from densekit.lifecycle import bind_to_launcher

    bind_to_launcher()  # a torchrun worker dies with torchrun (its own session would keep it running)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parsed = parser.parse_args(argv)
    module = commands()[parsed.command]
    logging.basicConfig(level=parsed.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs each CPU build it tries at INFO
    try:
        return int(module.run(*resolve(module, parsed)) or 0)
    except DensekitError as exc:
        print(f"densekit {parsed.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system said no somewhere a DensekitError does not cover: say it plainly
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"densekit {parsed.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
