"""examples/edge_app: the standalone runtime-only program works and imports no torch (nor web stack)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from serve_fixtures import make_bundle, solid, write_image

APP = Path(__file__).resolve().parents[1] / "examples" / "edge_app" / "classify.py"
RUN = textwrap.dedent(
    """
    import json, runpy, sys
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit:
        code = exit.code
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "onnx", "fastapi", "gradio", "uvicorn"})
    print(json.dumps({"code": code, "heavy": heavy}))
    """
)


def run(*args: object) -> tuple[list[str], dict]:
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(APP), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    lines = result.stdout.strip().splitlines()
    return lines[:-1] + result.stderr.strip().splitlines(), json.loads(lines[-1])


def test_edge_app_registers_a_folder_and_classifies(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    write_image(tmp_path / "support" / "red" / "1.png", solid((250, 0, 0)))
    write_image(tmp_path / "support" / "red" / "2.png", solid((230, 10, 0)))
    write_image(tmp_path / "support" / "blue" / "1.png", solid((0, 0, 250)))
    queries = [
        write_image(tmp_path / f"q{i}.png", solid(c)) for i, c in enumerate([(200, 0, 0), (0, 0, 180)])
    ]
    store = tmp_path / "classes.db"
    lines, report = run(bundle, tmp_path / "support", *queries, "--store", store, "--top-k", "2")
    assert report == {"code": 0, "heavy": []}
    assert [line.split(": ")[1].split("  ")[0] for line in lines] == ["red", "blue"]
    lines, report = run(bundle, tmp_path / "support", queries[0], "--store", store)  # classes persist
    assert report["code"] == 0 and lines[0].startswith(f"{queries[0]}: red")
    lines, report = run(bundle, tmp_path / "missing", queries[0])
    assert report["code"] == 2 and lines == [f"error: {tmp_path / 'missing'} is not a folder"]


def test_the_http_api_imports_no_torch():
    code = (
        "import sys, distilshot.serve.api\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnx'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
