"""Edge footprints: the three ways to embed a bundle in an app (README "Edge app"), measured the same way.

Each option runs as its own fresh process (a Python program, or a page in a new headless Chromium) that
opens the bundle, registers 5 Omniglot characters from one drawing each, then classifies 21 other drawings
one at a time:
- download / install: what the app has to carry (Python: the installed runtime packages and the bundle;
  browser: every byte the page fetched; mobile: the .ort models and their operator config, without the
  ONNX Runtime mobile library, which the app builds from that config);
- peak memory: the process's peak resident set (the browser: its renderer process, where the page and
  ONNX Runtime's WASM run);
- ready: from launching the process (opening the page) to the bundle loaded and able to classify;
- first classification: ready plus the first query's latency (session warm-up included), i.e. the first
  answer an app that already holds its classes can show;
- classify: the median latency of the other 20 queries, one image each (decode to answer).
Mobile is measured with the ORT-format models in the full onnxruntime Python package on this CPU (the
reduced-operator build cannot be made here); a phone's figures differ, the model bytes do not.

The model is a ConvNet-4 for 28 px greyscale input with random weights: latency and memory do not depend
on the weights.

    python bench/bench_edge.py --child python|mobile BUNDLE RESULT.json   (what the section runs)
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
SIZE = 28
CLASSES = 5
QUERIES = 21
ORT_GRAPHS = ("preprocess.onnx", "embedder.onnx", "head.onnx")


def make_bundle(folder: Path) -> Path:
    """A random-weights ConvNet-4 bundle with its app graphs and their ORT-format twins in ort/."""
    from distilshot.export.app_graphs import stage_app_graphs
    from distilshot.export.bundle import write_bundle
    from distilshot.export.ort_format import FOLDER, convert_to_ort
    from distilshot.train.checkpoint import ModelSpec

    spec = ModelSpec("protonet", "convnet4", 0, 1, SIZE, (0.92388,), (0.213133,), "omniglot", {})
    bundle, _ = write_bundle(spec.build(seed=0), spec, folder / "bundle")
    stage_app_graphs(bundle)
    convert_to_ort([bundle / g for g in ORT_GRAPHS], bundle / FOLDER)
    return bundle


def drawings() -> tuple[dict[str, Path], list[Path]]:
    """One drawing of each of 5 evaluation characters (the classes) and 21 other drawings (the queries)."""
    root = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_evaluation"
    characters = sorted(p for p in root.glob("*/*") if p.is_dir())[::40][:CLASSES]
    files = [sorted(c.glob("*.png")) for c in characters]
    support = {f"{c.parent.name} {c.name}": found[0] for c, found in zip(characters, files, strict=True)}
    # the queries take turns over the characters, each drawing other than the support one
    queries = [files[i % CLASSES][1 + i // CLASSES] for i in range(QUERIES)]
    return support, queries


def peak_rss_bytes(pid: int | str = "self") -> int:
    """A process's peak resident set, VmHWM (not getrusage's ru_maxrss, which keeps the high-water mark of
    the forked parent across exec)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def child_python(bundle: Path, out: Path) -> None:
    """The Python runtime (serve/, what examples/edge_app/classify.py runs)."""
    from distilshot.serve.classifier import FewShotClassifier

    support, queries = drawings()
    with FewShotClassifier(bundle, None, backend="onnxruntime") as classifier:
        ready = time.time()
        classifier.register_many({label: [path] for label, path in support.items()})
        seconds = []
        for query in queries:
            start = time.perf_counter()
            classifier.classify([query])
            seconds.append(time.perf_counter() - start)
    out.write_text(json.dumps({"ready_at": ready, "classify_s": seconds, "peak_rss": peak_rss_bytes()}))


def child_mobile(bundle: Path, out: Path) -> None:
    """What a mobile app does with ONNX Runtime alone: the three .ort graphs, the app's own image decoding
    (README "Edge app": grey level from Pillow's decoder here) and the class means."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from distilshot.core.manifest import load_manifest

    manifest = load_manifest(bundle)
    sessions = {g: ort.InferenceSession(str(bundle / "ort" / g.replace(".onnx", ".ort"))) for g in ORT_GRAPHS}
    pixels_input = manifest.preprocess_graph.input
    output = manifest.embedder.outputs[0].name
    prototypes_input = output + manifest.head_graph.prototypes_suffix

    def embed(path: Path) -> np.ndarray:
        grey = np.asarray(Image.open(path).convert("L"), np.uint8)[None, :, :, None]
        (model_input,) = sessions["preprocess.onnx"].run(None, {pixels_input: grey})
        outputs = sessions["embedder.onnx"].run([output], {manifest.embedder.input: model_input})
        return outputs[0]

    ready = time.time()
    support, queries = drawings()
    prototypes = np.concatenate([embed(path) for path in support.values()])
    seconds = []
    for query in queries:
        start = time.perf_counter()
        sessions["head.onnx"].run(None, {output: embed(query), prototypes_input: prototypes})
        seconds.append(time.perf_counter() - start)
    out.write_text(json.dumps({"ready_at": ready, "classify_s": seconds, "peak_rss": peak_rss_bytes()}))


def run_child(kind: str, bundle: Path, folder: Path) -> dict[str, Any]:
    out = folder / f"{kind}.json"
    launched = time.time()
    subprocess.run([sys.executable, __file__, "--child", kind, str(bundle), str(out)], check=True)
    result = json.loads(out.read_text())
    return summary(result["ready_at"] - launched, result["classify_s"], result["peak_rss"])


def summary(ready_s: float, classify_s: list[float], peak_rss: int) -> dict[str, Any]:
    return {
        "ready_s": ready_s,
        "first_classification_s": ready_s + classify_s[0],
        "classify_ms_median": 1000 * statistics.median(classify_s[1:]),
        "peak_rss_bytes": peak_rss,
    }


def installed_bytes(requirement: str, extras: tuple[str, ...] = (), seen: set[str] | None = None) -> int:
    """Bytes on disk of an installed distribution and everything it requires (with `extras`), once each."""
    seen = set() if seen is None else seen
    dist = metadata.distribution(requirement)
    name = dist.metadata["Name"].lower().replace("_", "-")
    if name in seen:
        return 0
    seen.add(name)
    total = sum(f.size or 0 for f in dist.files or [])
    for line in dist.requires or []:
        required = Requirement(line)
        if required.marker is None or any(required.marker.evaluate({"extra": e}) for e in ("", *extras)):
            total += installed_bytes(required.name, tuple(required.extras), seen)
    return total


def files_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def browser(bundle: Path, folder: Path) -> dict[str, Any]:
    """The web app in a new headless Chromium, served by serve.mjs."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(REPO / "tests"))  # the site and browser the web app's tests use
    from web_app_site import CHROMIUM, CHROMIUM_ARGS, served_web_app

    support, queries = drawings()
    fetched: dict[str, int] = {}
    with served_web_app(bundle, folder) as url, sync_playwright() as playwright:
        profile = folder / "profile"
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(120_000)
        page = context.new_page()
        page.on("response", lambda r: fetched.__setitem__(r.url, len(r.body()) if r.ok else 0))
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        for label, path in support.items():
            page.locator("#class-name").fill(label)
            page.locator("#support-files").set_input_files([str(path)])
            page.locator("#register").click()
            page.locator(f'#classes li[data-label="{label}"]').wait_for()
        page.locator("#query-files").set_input_files([str(q) for q in queries])
        page.wait_for_function(f"document.querySelectorAll('#results .result').length === {len(queries)}")
        timings = page.evaluate("globalThis.distilshot.timings")
        peak = renderer_peak_rss(profile)
        context.close()
    result = summary(timings["ready_ms"] / 1000, [ms / 1000 for ms in timings["classify_ms"]], peak)
    return {**result, "download_bytes": sum(fetched.values())}


def renderer_peak_rss(profile: Path) -> int:
    """The largest peak resident set of the renderer processes of the Chromium started with `profile`
    (renderers do not name the profile: their ancestor, the browser process, does)."""
    peak = 0
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            # Chromium rewrites its command line into one space-separated string (its process title)
            if b"--type=renderer " in (folder / "cmdline").read_bytes() and _started_with(
                folder.name, str(profile).encode()
            ):
                peak = max(peak, peak_rss_bytes(folder.name))
        except OSError:  # the process ended while we looked
            continue
    return peak


def _started_with(pid: str, text: bytes) -> bool:
    """Whether `text` is in the command line of process `pid` or of one of its ancestors."""
    while pid not in ("0", "1"):
        if text in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
        pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]  # the parent's pid
    return False


def run(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        folder = Path(tmp)
        bundle = make_bundle(folder)
        bundle_files = [bundle / "manifest.json", *(bundle / g for g in ORT_GRAPHS)]
        ort_files = sorted((bundle / "ort").iterdir())
        options = {
            "Python runtime": {
                **run_child("python", bundle, folder),
                "download_bytes": installed_bytes("distilshot", ("cpu",)) + files_bytes(bundle_files),
            },
            "Browser (onnxruntime-web, WASM)": browser(bundle, folder),
            "Mobile (.ort, full onnxruntime on this CPU)": {
                **run_child("mobile", bundle, folder),
                "download_bytes": files_bytes([bundle / "manifest.json", *ort_files]),
            },
        }
    rows = [
        f"| {name} | {o['download_bytes'] / 1e6:.1f} MB | {o['peak_rss_bytes'] / 1e6:.0f} MB | "
        f"{o['ready_s']:.2f} s | {o['first_classification_s']:.2f} s | {o['classify_ms_median']:.1f} ms |"
        for name, o in options.items()
    ]
    markdown = "\n".join(
        [
            "| option | download / install | peak memory | ready | first classification "
            "| classify (median) |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"ConvNet-4, 28 px, {CLASSES} classes of one drawing, {QUERIES} queries one at a time; mobile's "
            "download is the .ort models and config only (the app builds the reduced ONNX Runtime itself).",
        ]
    )
    return {"title": "Edge footprints", "markdown": markdown, "data": {"options": options}}


if __name__ == "__main__":
    _, flag, kind, bundle_arg, out_arg = sys.argv
    assert flag == "--child", __doc__
    {"python": child_python, "mobile": child_mobile}[kind](Path(bundle_arg), Path(out_arg))
