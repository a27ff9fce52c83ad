"""scripts/ stays off sys.path in the test session, so scripts/evaluate.py never shadows the `evaluate` package.

tests/conftest.py imports the scripts by path (`import_script`); the scripts put their own folder on sys.path only
when run as a program.
"""

import importlib
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SCRIPTS, import_script


def test_importing_every_script_leaves_scripts_off_sys_path_and_evaluate_is_the_package():
    for path in sorted(SCRIPTS.glob("*.py")):
        import_script(path.stem)  # each script's import-time code, sibling imports included, runs here
    assert SCRIPTS.resolve() not in [Path(p or ".").resolve() for p in sys.path]
    evaluate = importlib.import_module("evaluate")
    assert callable(evaluate.load) and Path(evaluate.__file__).parent.name == "evaluate"
    assert import_script("evaluate").__name__ == "dawn_evaluate_script" and "dawn_evaluate_script" in sys.modules


def test_sibling_imports_share_one_module():
    convert = import_script("convert_original_checkpoint")
    assert convert.dc is import_script("dawn_checkpoint")
    assert sys.modules[convert.export_hub_folder.__module__] is import_script("export_hub_folder")


def test_scripts_still_run_as_programs_even_with_safe_path():
    for flags in ([], ["-P"]):  # -P: Python itself does not put the script's folder on sys.path
        proc = subprocess.run([sys.executable, *flags, str(SCRIPTS / "evaluate.py"), "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "--model" in proc.stdout
