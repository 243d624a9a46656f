"""`distilshot register | classify | classes | remove | info`: the serving commands.

Kept light to import: the classifier (numpy, Pillow, onnxruntime) is imported inside the commands that
need it, and `classes` / `remove` open only the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from distilshot.errors import DistilshotError

if TYPE_CHECKING:
    from distilshot.serve.classifier import FewShotClassifier, Prediction
    from distilshot.serve.store import ClassInfo, ClassStore

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)

Bundle = Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder (manifest.json + ONNX graph).")]
OptionalBundle = Annotated[
    Path | None,
    typer.Option("--bundle", "-b", help="Bundle folder; if given, the store must match its model."),
]
# Text, not Path: a Path would turn postgresql://host into postgresql:/host.
Store = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        help="Support store: a SQLite file (created on first register) or postgresql://user@host:port/db.",
    ),
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend", help="Inference backend: auto (tensorrt > cuda > openvino > onnxruntime) or one."
    ),
]
Precision = Annotated[
    str, typer.Option("--precision", help="Which of the bundle's graphs to run: fp32, int8 or fp16.")
]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
Reembed = Annotated[
    bool,
    typer.Option("--reembed", help="If the store holds another model's embeddings, re-embed its images."),
]


def _classifier(
    bundle: Path, store: str | None, backend: str, precision: str, reembed: bool = False
) -> FewShotClassifier:
    from distilshot.serve.classifier import FewShotClassifier

    return FewShotClassifier(bundle, store, backend, precision=precision, reembed=reembed)


def _check_exists(store: str, hint: str = "") -> None:
    """A store file must exist for the commands that only read it (a PostgreSQL store is checked by
    opening it)."""
    from distilshot.serve.store import is_postgres_location

    if not is_postgres_location(store) and not Path(store).exists():
        raise DistilshotError(f"there is no support store at {store}{hint}")


def _store(store: str, bundle: Path | None) -> ClassStore:
    """The store alone (no inference engine), checked against the bundle's model when one is given."""
    from distilshot.core.manifest import load_manifest
    from distilshot.serve.store import open_store

    _check_exists(store)
    if bundle is None:
        return open_store(store)
    # the store may hold the embeddings of any of the bundle's graphs (fp32, int8, ...)
    manifest = load_manifest(bundle)
    with open_store(store) as probe:
        held = probe.fingerprint
    ours = {manifest.fingerprint(role) for role in manifest.graphs}
    return open_store(store, held if held in ours else manifest.fingerprint())


def _json(value: Any) -> str:
    """One line of JSON for stdout. NaN and infinity are not JSON: they are an error, not a line that
    a consumer's parser refuses."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        raise DistilshotError(
            "the result holds a number that is not finite (NaN or infinity), which JSON cannot carry"
        ) from None


def _print_table(title: str, columns: list[str], rows: list[list[str]], show_header: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not str: class names and paths are user data, never rich markup ("[red]" stays literal).
    table = Table(title=Text(title), title_justify="left", show_header=show_header)
    for column in columns:
        table.add_column(column, overflow="fold")  # fold, not truncate: fingerprints and paths stay whole
    for row in rows:
        table.add_row(*map(Text, row))
    Console().print(table)


def _print_classes(title: str, classes: list[ClassInfo], as_json: bool) -> None:
    if as_json:
        typer.echo(_json([{"name": c.name, "shots": c.shots, "created": c.created} for c in classes]))
    else:
        _print_table(title, ["class", "shots"], [[c.name, str(c.shots)] for c in classes])


@app.command()
def register(
    bundle: Bundle,
    store: Store,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Name of the new class.", show_default=False)
    ] = None,
    images: Annotated[
        list[Path] | None, typer.Argument(metavar="IMAGE", help="Its support images.", show_default=False)
    ] = None,
    folder: Annotated[
        Path | None, typer.Option("--folder", help="Register one class per subfolder, all or nothing.")
    ] = None,
    add: Annotated[bool, typer.Option("--add", help="Add the images to an existing class.")] = False,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    reembed: Reembed = False,
    as_json: Json = False,
) -> None:
    """Register a class from support images (or a folder of class subfolders)."""
    if folder is not None:
        if name is not None or images or add:
            raise DistilshotError(
                "give either NAME IMAGES... or --folder, not both (--add works with NAME only)"
            )
        with _classifier(bundle, store, backend, precision, reembed) as classifier:
            infos = classifier.register_folder(folder)
    else:
        if name is None or not images:
            raise DistilshotError("give a class NAME and at least one support image, or --folder")
        with _classifier(bundle, store, backend, precision, reembed) as classifier:
            infos = [classifier.add_shots(name, images) if add else classifier.register(name, images)]
    _print_classes("added to" if add else "registered", infos, as_json)


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Query images.", show_default=False)],
    bundle: Bundle,
    store: Store,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many classes to show per image.")] = 5,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Answer unknown below this logit (default: the bundle's)."),
    ] = None,
    augment: Annotated[
        bool, typer.Option("--augment", help="Complete each class with the bundle's generated features.")
    ] = False,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    as_json: Json = False,
) -> None:
    """Classify query images against the registered classes ("unknown" below the rejection threshold)."""
    _check_exists(store, "; register classes first")
    with _classifier(bundle, store, backend, precision) as classifier:
        predictions = classifier.classify(images, top_k=top_k, threshold=threshold, augment=augment)
    if as_json:
        lines = [_json(prediction.to_dict()) for prediction in predictions]  # all or none on stdout
        typer.echo("\n".join(lines))
    else:
        _print_table(
            "predictions", ["image", "answer", "class", "score", "logit"], _prediction_rows(predictions)
        )


def _prediction_rows(predictions: list[Prediction]) -> list[list[str]]:
    rows = []
    for p in predictions:
        answer = "unknown" if p.label is None else p.label
        for rank, ((label, score), logit) in enumerate(zip(p.top_k, p.logits, strict=True)):
            first = rank == 0
            rows.append(
                [p.image if first else "", answer if first else "", label, f"{score:.3f}", f"{logit:.4g}"]
            )
    return rows


@app.command()
def classes(store: Store, bundle: OptionalBundle = None, as_json: Json = False) -> None:
    """List the registered classes."""
    with _store(store, bundle) as opened:
        infos = opened.classes()
    _print_classes(f"classes in {store}", infos, as_json)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Class to remove.", show_default=False)],
    store: Store,
    bundle: OptionalBundle = None,
    as_json: Json = False,
) -> None:
    """Remove a class and its support images."""
    with _store(store, bundle) as opened:
        opened.remove(name)
    if as_json:
        typer.echo(_json({"removed": name}))
    else:
        typer.echo(f"removed {name!r}")


@app.command()
def info(
    bundle: Bundle,
    store: Annotated[
        str | None, typer.Option("--store", "-s", help="Also count this store's classes.")
    ] = None,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    as_json: Json = False,
) -> None:
    """Describe a bundle: model, quality metrics, fingerprint and the engine that runs it."""
    if store is not None:
        _check_exists(store)
    with _classifier(bundle, store, backend, precision) as classifier:
        summary = classifier.info()
    if store is None:
        del summary["store"], summary["classes"]  # an in-memory store says nothing about the user's classes
    if as_json:
        typer.echo(_json(summary))
    else:
        rows = [[key, _show(value)] for key, value in summary.items()]
        _print_table(f"bundle {summary['name']}", ["", ""], rows, show_header=False)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


@app.command("export-store")
def export_store(
    destination: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the copy.")],
    store: Store,
) -> None:
    """Write a portable copy of a store (one SQLite file) to import elsewhere."""
    with _store(store, None) as opened:
        path = opened.export_to(destination)
    typer.echo(f"exported {store} to {path}")


@app.command("import-store")
def import_store(
    source: Annotated[Path, typer.Argument(metavar="FILE", help="A file written by export-store.")],
    bundle: Bundle,
    store: Store,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    as_json: Json = False,
) -> None:
    """Add every class of an exported store (re-embedded if it comes from another model): all or none."""
    with _classifier(bundle, store, backend, precision) as classifier:
        infos = classifier.import_store(source)
    _print_classes(f"imported from {source}", infos, as_json)
