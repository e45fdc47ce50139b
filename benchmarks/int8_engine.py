#!/usr/bin/env python3
"""The int8 engine against the float ones, on trained runs: accuracy and speed.

For each run folder: ``kseg.quantize.quantize_run`` (NNCF, calibrated on the run's training
cases, gated on its validation cases), then the run's test cases and an ``--external`` labelled
set scored by the Keras model, OpenVINO float32, OpenVINO bf16 (its ``auto`` on a CPU with bf16
hardware) and the int8 model (scored and timed even where the gate refuses it, which its row
names with the validation drop), all with the run's refinement; then each engine's inference
speed on one batch at the run's size (the benchmark's timing rule: the median of ``--steps``
calls after ``--warmup``, all engines in this one process, plain logits without TTA).

    KSEG_PH2_DIR=../shared/data/ph2 python benchmarks/int8_engine.py --runs runs/A runs/B \
        --external ../shared/data/isic2018-dev:_segmentation --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _hardware import device  # noqa: E402
from _timing import median_seconds  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="run folders of the grid (model.keras, split.json)")
    p.add_argument("--external", default=None, metavar="DIR[:SUFFIX]", help="a labelled set no run trained on")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)

    from kseg import export, predict, quantize
    from kseg.data import load_dataset
    from kseg.evaluation import evaluate

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in map(Path, args.runs):
            model_path = run / "model.keras"
            # Written whatever the gate says, so a refused model's cost is measured too; its row says so.
            report = quantize.quantize_run(model_path, Path(scratch) / f"{run.name}.int8.xml", max_iou_drop=np.inf)
            int8 = "openvino int8"
            if report.val_iou_drop > quantize.MAX_IOU_DROP:
                int8 = f"openvino int8 (refused: val drop {report.val_iou_drop:.4f})"
                print(f"{run.name}: the gate refuses int8 (validation drop {report.val_iou_drop:.4f})", flush=True)
            model = predict.load_trained_model(model_path)
            onnx_path = export.export_model(model, Path(scratch) / f"{run.name}.onnx")
            engines = {
                "keras": model,
                "openvino f32": export.OpenVinoEngine(onnx_path, precision="float32"),
                "openvino bf16": export.OpenVinoEngine(onnx_path, precision="bfloat16"),
                int8: export.OpenVinoEngine(report.output),
            }
            refinement = export.load_saved_refinement(model_path)
            ids = quantize.split_ids(run)
            data = quantize.run_data(run)
            sets = {"test": (data["input"].select_ids(ids["test"]), data["target"].select_ids(ids["test"]))}
            if args.external:
                folder, _, suffix = args.external.partition(":")
                config = json.loads((run / "config.json").read_text())
                sets[Path(folder).name] = tuple(
                    load_dataset("auto", path=folder, image_size=size, mask_suffix=suffix)
                    for size in (config["image_size"], config["eval_size"])
                )
            batch = np.asarray(sets["test"][0].images[: args.batch], np.float32)
            for name, engine in engines.items():
                row = {"run": run.name, "engine": name, "val_iou": None}
                if name == int8:
                    row["val_iou"], row["val_iou_float"] = report.val_iou_int8, report.val_iou_float
                for label, (inputs, targets) in sets.items():
                    row[f"{label}_iou"] = evaluate(engine, inputs, targets, refinement=refinement).iou
                seconds, _ = median_seconds(
                    lambda: engine.predict(batch, batch_size=len(batch), verbose=0), args.warmup, args.steps
                )
                row["infer_img_s"] = len(batch) / seconds
                rows.append(row)
                print(json.dumps(row), flush=True)
    _print(rows, args.markdown)
    return rows


def _print(rows: list[dict], markdown: bool) -> None:
    print(f"# {device.describe(device.machine_info())}")
    sets = [k[: -len("_iou")] for k in rows[0] if k.endswith("_iou") and k not in ("val_iou",)]
    header = ["run", "engine", *[f"{s} IoU" for s in sets], "img/s", "x OpenVINO bf16"]
    lines = [header]
    for row in rows:
        bf16 = next(r for r in rows if r["run"] == row["run"] and r["engine"] == "openvino bf16")
        lines.append(
            [
                row["run"],
                row["engine"],
                *[f"{row[f'{s}_iou']:.4f}" for s in sets],
                f"{row['infer_img_s']:.1f}",
                f"{row['infer_img_s'] / bf16['infer_img_s']:.2f}",
            ]
        )
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("\n".join("| " + " | ".join(line) + " |" for line in lines[1:]))
    else:
        print("\n".join("  ".join(line) for line in lines))


if __name__ == "__main__":
    main()
