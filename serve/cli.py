"""`distilshot register | classify | classes | remove | reembed | info | export-store | import-store`: the
serving commands.

Kept light to import: the classifier (numpy, Pillow, onnxruntime) is imported inside the commands that
need it, and `classes` / `remove` open only the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from distilshot.errors import DistilshotError, ImageError
from distilshot.serve.cli_options import Reembed, bundle_option, store_option

if TYPE_CHECKING:
    from distilshot.serve.classifier import FewShotClassifier, Prediction
    from distilshot.serve.store import ClassInfo, ClassStore

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)

Bundle = Annotated[Path, bundle_option("Bundle folder (manifest.json + ONNX graphs).")]
OptionalBundle = Annotated[
    Path | None, bundle_option("Bundle folder; if given, the store must hold its model's embeddings.")
]
Store = Annotated[
    str,
    store_option(
        "Support store: a SQLite file (created on first register) or postgresql://user@host:port/db."
    ),
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        metavar="NAME",
        help="Inference backend: auto (tensorrt > cuda > openvino > onnxruntime) or one of them.",
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision", metavar="NAME", help="Which of the bundle's graphs to run: fp32, int8 or fp16."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


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
    from distilshot.serve.classifier import model_mismatch
    from distilshot.serve.store import ModelMismatchError, open_store

    _check_exists(store)
    opened = open_store(store)
    if bundle is None:
        return opened
    # the store may hold the embeddings of any of the bundle's graphs (fp32, int8, ...)
    manifest = load_manifest(bundle)
    with opened:
        if opened.fingerprint not in {manifest.fingerprint(role) for role in manifest.graphs}:
            raise ModelMismatchError(model_mismatch(opened, manifest, bundle, "fp32"))
        held = opened.fingerprint
    return open_store(store, held)


def _json(value: Any) -> str:
    """One line of JSON for stdout. NaN and infinity are not JSON: they are an error, not a line that
    a consumer's parser refuses."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        raise DistilshotError(
            "the result holds a number that is not finite (NaN or infinity), which JSON cannot carry"
        ) from None


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not str: class names and paths are user data, never rich markup ("[red]" stays literal).
    table = Table(title=Text(title), title_justify="left")
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
        Path | None,
        typer.Option(
            "--folder",
            metavar="DIR",
            help="Register one class per subfolder, all or nothing.",
            show_default=False,
        ),
    ] = None,
    add: Annotated[bool, typer.Option("--add", help="Add the images to an existing class.")] = False,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    reembed: Reembed = False,
    as_json: Json = False,
) -> None:
    """Register a class from support images (or a folder of class subfolders).

    Example: distilshot register --bundle runs/RUN/bundle --store classes.db "Latin A" a1.png a2.png
    """
    if folder is not None:
        if name is not None or images or add:
            raise DistilshotError(
                "give either NAME IMAGE... or --folder, not both (--add works with NAME only)"
            )
        with _classifier(bundle, store, backend, precision, reembed) as classifier:
            infos = classifier.register_folder(folder)
    else:
        if name is None or not images:
            raise DistilshotError("give a class NAME and at least one support IMAGE, or --folder DIR")
        with _classifier(bundle, store, backend, precision, reembed) as classifier:
            infos = [classifier.add_shots(name, images) if add else classifier.register(name, images)]
    _print_classes("added to" if add else "registered", infos, as_json)


@app.command()
def classify(
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE", help="Query images, or folders searched for them.", show_default=False
        ),
    ],
    bundle: Bundle,
    store: Store,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", metavar="N", help="How many classes to show per image.")
    ] = 5,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            metavar="LOGIT",
            help="Answer unknown below this logit (default: the bundle's).",
            show_default=False,
        ),
    ] = None,
    augment: Annotated[
        bool, typer.Option("--augment", help="Complete each class with the bundle's generated features.")
    ] = False,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    as_json: Json = False,
) -> None:
    """Classify query images against the registered classes ("unknown" below the rejection threshold).

    A folder stands for the image files under it, searched recursively (the types register --folder takes).
    An image that cannot be read is reported, on stderr or as a JSON record with its "error",
    while the others are answered; the exit status is then 2.

    Example: distilshot classify --bundle runs/RUN/bundle --store classes.db query.png queries/
    """
    _check_exists(store, "; register classes first")
    paths = _query_images(images)
    with _classifier(bundle, store, backend, precision) as classifier:
        answers = classifier.classify_each(paths, top_k=top_k, threshold=threshold, augment=augment)
    predictions = [a for a in answers if not isinstance(a, ImageError)]
    failures = [a for a in answers if isinstance(a, ImageError)]
    if as_json:
        records = [
            {"image": str(path), "error": str(a)} if isinstance(a, ImageError) else a.to_dict()
            for path, a in zip(paths, answers, strict=True)
        ]
        typer.echo("\n".join(_json(record) for record in records))  # all or none on stdout
    elif predictions:
        _print_table(
            "predictions", ["image", "answer", "class", "score", "logit"], _prediction_rows(predictions)
        )
    for error in failures:
        typer.echo(f"error: {error}", err=True)
    if failures:
        raise typer.Exit(2)


def _query_images(paths: list[Path]) -> list[Path]:
    """The images named, each folder replaced by the image files under it (sorted, hidden ones left out)."""
    from distilshot.serve.classifier import IMAGE_SUFFIXES

    images = []
    for path in paths:
        if not path.is_dir():
            images.append(path)
            continue
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not found:
            raise DistilshotError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        images += found
    return images


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
    """List the registered classes.

    Example: distilshot classes --store classes.db
    """
    with _store(store, bundle) as opened:
        infos = opened.classes()
        location = opened.location  # without the password a postgresql:// URL may carry
    _print_classes(f"classes in {location}", infos, as_json)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Class to remove.", show_default=False)],
    store: Store,
    bundle: OptionalBundle = None,
    as_json: Json = False,
) -> None:
    """Remove a class and its support images.

    Example: distilshot remove --store classes.db "Latin A"
    """
    with _store(store, bundle) as opened:
        opened.remove(name)
    if as_json:
        typer.echo(_json({"removed": name}))
    else:
        typer.echo(f"removed {name!r}")


@app.command()
def reembed(
    bundle: Bundle,
    store: Store,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    as_json: Json = False,
) -> None:
    """Re-embed every support image of a store with this bundle's graph (in one transaction).

    For a store of another model, or of another precision of this one; the store belongs to it after.

    Example: distilshot reembed --bundle runs/NEW/bundle --store classes.db
    """
    with _store(store, None) as opened:
        before = opened.fingerprint
    with _classifier(bundle, store, backend, precision, reembed=True) as classifier:
        infos = classifier.classes()
        changed = classifier.store.fingerprint != before
    if as_json:
        typer.echo(
            _json({"reembedded": changed, "classes": len(infos), "shots": sum(c.shots for c in infos)})
        )
    elif changed:
        typer.echo(f"re-embedded {sum(c.shots for c in infos)} support images of {len(infos)} classes")
    else:
        typer.echo("the store already holds this graph's embeddings; nothing to re-embed")


@app.command()
def info(
    bundle: Bundle,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", "-s", metavar="STORE", help="Also count this store's classes.", show_default=False
        ),
    ] = None,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    as_json: Json = False,
) -> None:
    """Describe a bundle: model, accuracy, when it answers unknown, fingerprint and the engine that runs it.

    Example: distilshot info --bundle runs/RUN/bundle
    """
    from distilshot.serve.model_card_text import model_card_lines

    if store is not None:
        _check_exists(store)
    with _classifier(bundle, store, backend, precision) as classifier:
        summary = classifier.info()
    if store is None:
        del summary["store"], summary["classes"]  # an in-memory store says nothing about the user's classes
    if as_json:
        typer.echo(_json(summary))
    else:
        typer.echo("\n".join(model_card_lines(summary)))


@app.command("export-store")
def export_store(
    destination: Annotated[
        Path, typer.Argument(metavar="FILE", help="Where to write the copy.", show_default=False)
    ],
    store: Store,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace FILE if it exists.")] = False,
    as_json: Json = False,
) -> None:
    """Write a portable copy of a store (one SQLite file) to import elsewhere.

    Example: distilshot export-store copy.db --store classes.db
    """
    if destination.exists() and not overwrite:
        raise DistilshotError(f"{destination} exists; pass --overwrite to replace it, or name another file")
    with _store(store, None) as opened:
        path = opened.export_to(destination)
        count, location = len(opened.classes()), opened.location
    if as_json:
        typer.echo(_json({"exported": str(path), "classes": count}))
    else:
        typer.echo(f"exported {count} classes of {location} to {path}")


@app.command("import-store")
def import_store(
    source: Annotated[
        Path, typer.Argument(metavar="FILE", help="A file written by export-store.", show_default=False)
    ],
    bundle: Bundle,
    store: Store,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    as_json: Json = False,
) -> None:
    """Add every class of an exported store (re-embedded with this bundle): all or none.

    Example: distilshot import-store copy.db --bundle runs/RUN/bundle --store classes.db
    """
    with _classifier(bundle, store, backend, precision) as classifier:
        infos = classifier.import_store(source)
    _print_classes(f"imported from {source}", infos, as_json)
