"""Milliseconds per image of trained models as a user runs them: ``kseg.predict.predict_mask_batch``
on a folder's images (resized to the model's input, its own refinement applied: TTA views,
post-processing, temperature), the same engine and the same images for every model, in one
process. Each model: ``--warmup`` untimed calls, then the median of ``--steps`` timed calls on a
batch of ``--batch`` images.

    python benchmarks/predict_speed.py kseg/pretrained/dermoscopy.keras runs/RUN \\
        --images ../shared/data/isic2018-dev/images --engine keras

A model is a ``.keras`` file or a run folder (its ``model.keras``); with ``--engine onnx`` or
``openvino``, an ``.onnx`` file from ``python -m kseg export``. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _timing import median_seconds  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model files or run folders; ratios are against the first")
    p.add_argument("--images", required=True, help="a folder of images (the first --batch are used)")
    p.add_argument("--engine", default="auto", help="auto (by suffix), keras, onnx or openvino")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--plain", action="store_true", help="no refinement: one view, the networks alone")
    args = p.parse_args(argv)

    from kseg import device, predict, refine
    from kseg.data import read_image

    images = [read_image(path) for path in predict.find_images(args.images)[: args.batch]]
    print(f"{device.cpu_kind()}, engine {args.engine}, {len(images)} images of {args.images}")
    print("| model | input | TTA views | ms per image | first's ms / this ms |\n|---|---|---|---|---|")
    rows = []
    for path in args.models:
        model = predict.load_engine(path, args.engine)
        file = predict.model_file(path)
        # A .keras file carries its refinement; an exported .onnx (or --plain) runs one plain view.
        keeps_refinement = file.suffix == ".keras" and not args.plain
        refinement = refine.load_refinement(file) if keeps_refinement else refine.Refinement()
        seconds, _ = median_seconds(
            lambda: predict.predict_mask_batch(model, images, refinement=refinement, batch_size=args.batch),
            args.warmup,
            args.steps,
        )
        ms = 1000 * seconds / len(images)
        rows.append(dict(model=path, ms_per_image=ms, tta=refinement.tta))  # first: the reference
        size = "x".join(map(str, predict.model_input_size(model)))
        views = len(refine.VIEWS[refinement.tta])
        print(f"| `{path}` | {size} | {views} | {ms:.1f} | {rows[0]['ms_per_image'] / ms:.2f} |")
    return rows


if __name__ == "__main__":
    main()
