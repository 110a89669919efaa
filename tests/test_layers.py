"""Imports go downward: the library never imports its orchestrator, and split modules do not import back."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("module", "forbidden"), [
    ("instvl.annotate.config", "instvl.flows"),  # the annotation library sits below the Prefect flows
    ("instvl.annotate.run", "instvl.flows"),
    ("instvl.qa.round", "instvl.flows"),  # the QC round's config is shared by the CLI and the flows
    ("instvl.qa.round", "prefect"),
    ("instvl.flows.config", "prefect"),
    ("instvl.datasets.report", "instvl.datasets.inspect"),  # inspect builds the tables, report draws them
])
def test_module_does_not_import(module, forbidden):
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m == {forbidden!r} "
            f"or m.startswith({forbidden!r} + '.')); print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, f"{module} imports {result.stdout.strip()} {result.stderr[-2000:]}"
