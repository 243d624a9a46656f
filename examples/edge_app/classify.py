"""A minimal edge app on the distilshot runtime (numpy + Pillow + ONNX Runtime; no torch).

    python classify.py BUNDLE SUPPORT_FOLDER IMAGE [IMAGE ...] [--store classes.db] [--top-k 3]

SUPPORT_FOLDER holds one subfolder of images per class. Classes are registered once into the store (in
memory unless --store is given; a persistent store keeps them for the next run) and every IMAGE is
classified against them: the answer, or "unknown" below the bundle's calibrated threshold, then the
top-k classes with their probabilities.
"""

from __future__ import annotations

import argparse
import sys

from distilshot.errors import DistilshotError
from distilshot.serve.classifier import FewShotClassifier, folder_classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder (manifest.json + embedder.onnx)")
    parser.add_argument("support", help="folder with one subfolder of support images per class")
    parser.add_argument("images", nargs="+", help="query images")
    parser.add_argument("--store", default=None, help="SQLite store to keep the classes in (default: memory)")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        with FewShotClassifier(args.bundle, args.store) as classifier:
            known = {c.name for c in classifier.classes()}
            new = {name: files for name, files in folder_classes(args.support).items() if name not in known}
            if new:
                classifier.register_many(new)
            for prediction in classifier.classify(args.images, top_k=args.top_k):
                answer = prediction.label or "unknown"
                ranked = ", ".join(f"{label} {score:.2f}" for label, score in prediction.top_k)
                print(f"{prediction.image}: {answer}  ({ranked})")
    except DistilshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
