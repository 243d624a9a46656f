"""The serving runtime must run where torch (and the training-only onnx package) is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from serve_fixtures import make_bundle

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from PIL import Image

    bundle, store = sys.argv[1], sys.argv[2]
    from distilshot.serve.classifier import FewShotClassifier

    with FewShotClassifier(bundle, store) as clf:
        clf.register("red", [Image.new("RGB", (20, 20), (255, 0, 0))])
        clf.register("blue", [Image.new("RGB", (20, 20), (0, 0, 255))])
        top = clf.classify([Image.new("RGB", (20, 20), (200, 0, 0))])[0].top_k[0][0]

    from distilshot.cli import main

    for argv in (["classes", "--store", store], ["info", "--bundle", bundle, "--json"]):
        try:
            main(argv)
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "torchvision"))
    print(json.dumps({"top": top, "heavy": heavy}))
    """
)


def test_classify_and_cli_never_import_torch(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle), str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"top": "red", "heavy": []}
