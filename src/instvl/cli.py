"""The `instvl` command line: subcommand groups mirror the package folders; each command is `main(cfg)`.

Configuration comes from `--config NAME|PATH` and `--set a.b=c`; positional arguments and the few
listed options are shorthands for config fields. Commands are imported lazily so `instvl --help` is fast.

    instvl datasets synth out/synth --num-samples 8
    instvl datasets validate out/synth
    instvl train --config train/tiny --set data.root=out/synth
"""

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from instvl.config import ConfigError, load_config, preset_names, preset_summary, to_yaml
from instvl.log import setup_logging


@dataclass(frozen=True)
class Command:
    """One CLI command: where its config class and `main` live, and which arguments map to fields."""

    group: str | None
    name: str
    module: str
    config_class: str
    default_preset: str | None
    help: str
    positionals: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    preset_group: str | None = None
    """When set, --config is required and the error lists this group's presets (no silent default)."""


COMMANDS = (
    Command("datasets", "synth", "instvl.datasets.synth", "SynthConfig", "datasets/synth-tiny",
            "generate InstVL-Synth shards (or raw MP4/JPEG media with --format raw)", ("output",),
            {"--num-samples": "num_samples", "--seed": "seed", "--format": "format"}),
    Command("datasets", "validate", "instvl.datasets.validate", "ValidateConfig", None,
            "check schema, version, checksums and invariants of a dataset root", ("root",)),
    Command("datasets", "inspect", "instvl.datasets.inspect", "InspectConfig", None,
            "print dataset statistics and write an HTML report", ("root",),
            {"--html": "html", "--renders": "renders"}),
    Command("datasets", "render", "instvl.datasets.render", "RenderConfig", None,
            "render one sample's trajectories, ids and captions to a GIF/MP4", ("root", "sample_id"),
            {"--output": "output"}),
    Command("annotate", "run", "instvl.annotate.run", "AnnotateRunConfig", None,
            "detect, track and caption a folder/glob/URL of media into InstVL shards", ("input", "output"),
            preset_group="annotate"),
    Command("qa", "serve", "instvl.qa.server", "ServeConfig", "qa/local",
            "start a local Label Studio server"),
    Command("qa", "push", "instvl.qa.push", "PushConfig", "qa/local",
            "send routed samples to Label Studio for review", ("root",)),
    Command("qa", "pull", "instvl.qa.pull", "PullConfig", "qa/local",
            "merge reviewed Label Studio tasks into a new dataset version", ("root", "output")),
    Command("qa", "round", "instvl.flows.qc_round", "QCRoundConfig", "qa/local",
            "the QC round as a Prefect flow: --stage push, later --stage pull", ("root", "output?"),
            {"--stage": "stage"}),
    Command("qa", "report", "instvl.qa.report", "ReportConfig", None,
            "acceptance/correction statistics of a reviewed dataset", ("root",)),
    Command(None, "build", "instvl.flows.build_corpus", "BuildConfig", None,
            "run the resumable corpus-build flow (Prefect)", ("input", "output"),
            {"--retry-quarantined": "flow.retry_quarantined", "--new-version": "flow.new_version"},
            preset_group="annotate"),
    Command(None, "demo", "instvl.flows.demo", "DemoConfig", "flows/demo",
            "offline CPU demo: synth media, build, validate, inspect, train, eval", ("output?",)),
    Command(None, "train", "instvl.train.main", "TrainConfig", "train/tiny", "InstAP pre-training"),
    Command(None, "eval", "instvl.train.evaluate", "EvalConfig", "train/tiny",
            "retrieval and grounding evaluation of a checkpoint"),
)


def _add_command(sub: argparse._SubParsersAction, cmd: Command) -> None:
    parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
    for name in cmd.positionals:
        optional = name.endswith("?")  # "output?": may be left out, the preset's value stays
        field_name = name.rstrip("?")
        parser.add_argument(field_name, nargs="?" if optional else None,
                            help=f"sets config field {field_name!r}")
    for flag, target in cmd.options.items():
        parser.add_argument(flag, dest=f"opt_{target}", metavar=target.upper(), help=f"sets {target!r}")
    preset_help = (f"preset name or YAML path (required: one of {', '.join(preset_names(cmd.preset_group))})"
                   if cmd.preset_group else "preset name or YAML path")
    parser.add_argument("--config", default=cmd.default_preset, help=preset_help)
    parser.add_argument("--set", action="append", default=[], metavar="A.B=C", help="override a field")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(command=cmd)


def build_parser() -> argparse.ArgumentParser:
    """The full argparse tree."""
    parser = argparse.ArgumentParser(prog="instvl", description=__doc__.split("\n")[0])
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS:
        if cmd.group is None:
            _add_command(top, cmd)
            continue
        if cmd.group not in groups:
            group_parser = top.add_parser(cmd.group, help=f"{cmd.group} commands")
            groups[cmd.group] = group_parser.add_subparsers(dest="cmd", required=True, metavar="CMD")
        _add_command(groups[cmd.group], cmd)
    return parser


def _values(cmd: Command, args: argparse.Namespace) -> dict[str, str]:
    """The fields that positionals and options set, as the strings given (not parsed as YAML: a path such
    as "1", "yes" or "it's" stays that string; pydantic turns "8" into the int a field wants)."""
    names = [name.rstrip("?") for name in cmd.positionals]
    pairs = [(name, getattr(args, name)) for name in names]
    pairs += [(target, getattr(args, f"opt_{target}")) for target in cmd.options.values()]
    return {key: value for key, value in pairs if value is not None}


def run_command(cmd: Command, preset: str | None, overrides: Sequence[str], print_config: bool,
                values: Mapping[str, Any] | None = None) -> int:
    """Resolve the command's config (preset, then `values`, then `a.b=c` overrides); call its `main`."""
    if preset is None and cmd.preset_group:
        guide = preset_guide(cmd.preset_group)
        raise ConfigError(f"--config is required, there is no default preset:{guide}")
    module = importlib.import_module(cmd.module)
    cfg = load_config(getattr(module, cmd.config_class), preset, overrides, values)
    if print_config:
        print(to_yaml(cfg), end="")
        return 0
    return int(module.main(cfg) or 0)


def preset_guide(group: str) -> str:
    """The group's presets, one a line with the first line of its leading comment."""
    return "".join(f"\n  {name}: {preset_summary(name)}" for name in preset_names(group))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `instvl` console script."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        values = _values(args.command, args)
        return run_command(args.command, args.config, args.set, args.print_config, values)
    except ConfigError as err:
        print(f"instvl: config error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        # Bad input, missing files or packages: one clear line; INSTVL_DEBUG=1 shows the traceback.
        if os.environ.get("INSTVL_DEBUG"):
            raise
        print(f"instvl {args.command.name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
