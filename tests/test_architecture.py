"""The layout is a contract: layers, no cycles, short functions, statuses as an enum, ruff-clean."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = sorted((REPO / "fercore").rglob("*.py")) + sorted((REPO / "pages").glob("*.py")) + [REPO / "streamlit_app.py"]
MAX_FUNCTION_LINES = 80
LONG_ALLOWED = {"build_parser"}   # the CLI's parser table reads best as one list


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed; `pip install -r requirements-dev.txt` installs it")
    return found


def test_layers_hold_and_there_are_no_cycles():
    """.importlinter: ui above cli above jobs above train/predict/teach above data/models/store above config."""
    out = subprocess.run([_tool("lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    import grimp
    graph = grimp.build_graph("fercore")
    cycles = {tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if graph.chain_exists(importer=b, imported=a)}
    assert not cycles, f"module cycles: {sorted(cycles)}"


def test_ruff_is_clean():
    out = subprocess.run([_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


def test_functions_stay_short():
    long = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in LONG_ALLOWED:
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_no_status_is_compared_to_a_string_literal():
    """Statuses are RunStatus members; a literal like "finished" in a comparison is a rename waiting to break."""
    statuses = "queued|running|finished|failed|cancelled"
    pattern = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({statuses})["']|["']({statuses})["']\s*(==|!=)""")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in CODE if p.name != "entities.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_store_rows_never_leave_the_store():
    """ORM rows (schema.py) are imported only inside fercore/store."""
    users = [p for p in CODE if "fercore.store.schema" in p.read_text() and "fercore/store/" not in str(p)]
    assert not users, users
