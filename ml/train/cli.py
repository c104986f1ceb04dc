"""``lineage validate-config FILE``: check the training sections of a Dagster run-config YAML.

Validates ``ops.<checkpoint asset>.config`` through the typed settings (unknown fields, batch
size 0, warmup >= steps, heads not dividing the hidden size, ...), the LoRA rank against the LM's
hidden size, and ``resources.torch_device.config`` against this machine (a GPU profile on a
machine without CUDA is refused). Exit 0 when valid, 1 with one ``field.path: problem`` line per
error otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_validate_config(args: argparse.Namespace) -> int:
    import yaml

    from ml.train.config import validate_run_config

    path = Path(args.file)
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except OSError as exc:
        print(f"{path}: cannot read ({exc.strerror})", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:
        print(f"{path}: not valid YAML ({exc})", file=sys.stderr)
        return 1
    errors, notes = validate_run_config(data, check_hardware=not args.no_hardware_check)
    for note in notes:
        print(f"note: {note}")
    if errors:
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print(f"{path}: training config OK")
    return 0


def add_commands(sub) -> None:
    v = sub.add_parser("validate-config", help="validate the training sections of a run-config YAML",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("file", help="a Dagster run config, e.g. configs/debug.yaml")
    v.add_argument("--no-hardware-check", action="store_true",
                   help="do not compare the torch_device profile with this machine's GPUs")
    v.set_defaults(func=cmd_validate_config)
