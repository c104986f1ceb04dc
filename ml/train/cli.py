"""``lineage validate-config FILE``: check every section of a Dagster run-config YAML.

The data stages' ranges and cross-field rules (``ml/settings.py``), and the training sections:

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

    from ml.settings import validate_profile
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
    _, notes = validate_run_config(data, check_hardware=not args.no_hardware_check)
    errors = validate_profile(data, check_hardware=not args.no_hardware_check)  # every section (ml/settings.py)
    for note in (n for n in notes if not n.startswith("not training sections")):
        print(f"note: {note}")
    if errors:
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print(f"{path}: config OK (every section)")
    return 0


def add_commands(sub) -> None:
    v = sub.add_parser("validate-config", help="validate every section of a run-config YAML (ranges, cross-field rules)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("file", help="a Dagster run config, e.g. configs/debug.yaml")
    v.add_argument("--no-hardware-check", action="store_true",
                   help="do not compare the torch_device profile with this machine's GPUs")
    v.set_defaults(func=cmd_validate_config)
