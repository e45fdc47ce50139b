"""The experiments.csv leaderboard: locked atomic appends, a schema that grows, old files, the
grouping by group_hash (and by recorded columns for older rows), the ranking and the chart."""

import csv
import multiprocessing
import os
import subprocess
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from kseg.experiment import leaderboard

pytestmark = pytest.mark.backend_independent

REPO = Path(__file__).resolve().parents[1]


def _row(i: int, **extra) -> dict:
    return {
        "run_id": f"r{i}",
        "model": "unet",
        "loss": "bce",
        "seed": i,
        "dataset": "synthetic",
        "preset": "smoke",
        "backend": "jax",
        "precision": "float32",
        "test_iou": 0.5 + i / 100,
        "config_hash": f"h{i}",
        "image_size": 32,
        "base_filters": 4,
        "epochs": 2,
        "status": "ok",
        **extra,
    }


def test_append_creates_header_and_keeps_every_row(tmp_path):
    path = tmp_path / "lb.csv"
    for i in range(3):
        leaderboard.append_row(path, _row(i))
    with open(path) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == leaderboard.COLUMNS
    assert [r[1] for r in rows[1:]] == ["r0", "r1", "r2"]


def test_values_with_commas_and_quotes_survive(tmp_path):
    path = tmp_path / "lb.csv"
    message = 'ValueError: bad "thing", really'
    leaderboard.append_row(path, _row(0, status="failed", error=message))
    assert leaderboard.read(path).loc[0, "error"] == message


def test_unknown_column_and_status_are_rejected(tmp_path):
    with pytest.raises(
        ValueError, match=r"Unknown leaderboard columns. Expected those of the schema .* Received: \['colour'\]"
    ):
        leaderboard.append_row(tmp_path / "lb.csv", _row(0, colour="red"))
    with pytest.raises(
        ValueError, match=r"Unknown status 'maybe'. Expected one of: ok, failed, nan. Received: status='maybe'"
    ):
        leaderboard.append_row(tmp_path / "lb.csv", _row(0, status="maybe"))
    assert not (tmp_path / "lb.csv").exists()


def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "lb.csv"
    leaderboard.append_row(path, _row(0))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        leaderboard.append_row(path, _row(1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def _append_many(path, worker, n):
    for i in range(n):
        leaderboard.append_row(path, _row(worker * 1000 + i))


@pytest.mark.slow
def test_concurrent_appends_from_processes_lose_no_row(tmp_path):
    path = tmp_path / "lb.csv"
    context = multiprocessing.get_context("spawn")
    # Two processes (each imports Keras: 8 s under PyTorch here) racing over 30 appends each.
    workers = [context.Process(target=_append_many, args=(path, w, 30)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    table = pd.read_csv(path)
    assert len(table) == 60 and table["run_id"].nunique() == 60


def test_completed_hashes_count_only_ok_rows(tmp_path):
    path = tmp_path / "lb.csv"
    leaderboard.append_row(path, _row(0))
    leaderboard.append_row(path, _row(1, status="failed"))
    leaderboard.append_row(path, _row(2, status="nan"))
    assert leaderboard.completed_hashes(path) == {"h0"}
    assert leaderboard.completed_hashes(tmp_path / "absent.csv") == set()


def test_summary_mean_std_n_ranked():
    table = pd.DataFrame(
        [
            _row(0, test_iou=0.80, config_hash="a"),
            _row(1, test_iou=0.90, config_hash="b"),
            _row(2, model="segnet", test_iou=0.70, config_hash="c"),
            _row(3, model="segnet", test_iou=0.99, config_hash="d", status="failed"),
        ]
    )
    summary = leaderboard.summarise(table)
    assert list(summary["model"]) == ["unet", "segnet"]
    assert summary.loc[0, "mean"] == pytest.approx(0.85)
    assert summary.loc[0, "std"] == pytest.approx(pd.Series([0.8, 0.9]).std())
    assert list(summary["n"]) == [2, 1]
    mixed = leaderboard.summarise(
        pd.concat([table, pd.DataFrame([_row(4, precision="mixed_bfloat16", config_hash="e")])])
    )
    assert list(mixed["n"]) == [2, 1, 1]  # another precision is another group
    text = leaderboard.format_summary(summary)
    assert "0.850 +- 0.071 (n=2)" in text


def test_plot_writes_png(tmp_path):
    summary = leaderboard.summarise(pd.DataFrame([_row(0), _row(1, model="segnet", config_hash="x")]))
    path = leaderboard.plot(summary, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_grid_chart_labels_pairs_and_stays_small(tmp_path, monkeypatch):
    """Nine model x loss pairs of one recipe, one of them at IoU 0 (issue 40, defect 8): labelled
    by the pair alone, a few hundred pixels tall, every value written beside its bar."""
    import cv2
    from matplotlib.figure import Figure

    rows = [
        _row(i, model=model, loss=loss, config_hash=f"{model}{loss}", test_iou=0.0 if i == 0 else 0.8)
        for i, (model, loss) in enumerate((m, f) for m in ("segnet", "unet", "unet2") for f in ("bce", "dice", "focal"))
    ]
    summary = leaderboard.summarise(pd.DataFrame(rows))
    figures, savefig = [], Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    path = leaderboard.plot(summary, tmp_path / "chart.png")
    height, width = cv2.imread(str(path)).shape[:2]
    assert height < 700 and width < 1100
    axes = figures[0].axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()][-1] == "segnet + bce"  # the pair alone
    texts = [text.get_text() for text in axes.texts]
    assert "0.000 [0.000, 0.000]" in texts and len(texts) == 9


def test_merge_appends_only_missing_rows(tmp_path):
    source, target = tmp_path / "remote.csv", tmp_path / "lb.csv"
    for i in range(3):
        leaderboard.append_row(source, _row(i, timestamp=f"t{i}"))
    leaderboard.append_row(target, _row(0, timestamp="t0"))
    assert leaderboard.merge(source, target) == 2
    assert leaderboard.merge(source, target) == 0
    assert sorted(pd.read_csv(target)["run_id"]) == ["r0", "r1", "r2"]


def test_markdown_report_and_leaderboard_command(tmp_path, capsys):
    from kseg.cli import main

    path = tmp_path / "lb.csv"
    for i, iou in enumerate([0.8, 0.9]):
        leaderboard.append_row(
            path,
            _row(
                i,
                test_iou=iou,
                test_dice=iou + 0.05,
                test_dataset_iou=iou,
                train_seconds=10 * (i + 1),
                run_seconds=60 * (i + 1),
                params=1_968_513,
                epochs_run=5,
                device="cpu",
            ),
        )
    report = leaderboard.markdown_report(leaderboard.read(path))
    assert (
        "| synthetic | smoke | cpu | jax | float32 | unet | bce | 32px w4 2ep plateau "
        "| 0.850 +- 0.071 | 0.900 +- 0.071 | 0.850 | 2 | 1.97M | 15 | 1.5 | 5 |" in report
    )
    assert main(["leaderboard", "--results", str(path), "--markdown"]) == 0
    assert report in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(tmp_path / "none.csv")]) == 2


def test_leaderboard_filters_by_version_and_recipe(tmp_path, capsys):
    from kseg.cli import main

    path = tmp_path / "lb.csv"
    leaderboard.append_row(path, _row(0, kseg_version="0.2.0", test_iou=0.81))
    leaderboard.append_row(path, _row(1, kseg_version="0.3.0", test_iou=0.82, config_hash="b"))
    leaderboard.append_row(path, _row(2, kseg_version="0.3.0", test_iou=0.83, config_hash="c", epochs=3))
    assert main(["leaderboard", "--results", str(path), "--markdown", "--kseg-version", "0.3.0"]) == 0
    out = capsys.readouterr().out
    assert "0.820" in out and "0.830" in out and "0.810" not in out
    assert main(["leaderboard", "--results", str(path), "--markdown", "--recipe", "32px w4 3ep plateau"]) == 0
    out = capsys.readouterr().out
    assert "0.830" in out and "0.820" not in out and "0.810" not in out
    assert main(["leaderboard", "--results", str(path), "--markdown", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "0.820" in out and "0.830" not in out and "0.810" not in out


def test_leaderboard_filters_by_cpu_kind_and_loss_and_an_older_file_has_no_cpu_kind(tmp_path, capsys):
    from kseg.cli import main

    path = tmp_path / "lb.csv"
    leaderboard.append_row(path, _row(0, cpu_kind="AMD EPYC Zen 4, avx512_bf16", test_iou=0.81))
    leaderboard.append_row(path, _row(1, cpu_kind="AMD EPYC Zen 5, avx512_bf16", test_iou=0.82, config_hash="b"))
    assert main(["leaderboard", "--results", str(path), "--markdown", "--cpu-kind", "AMD EPYC Zen 5, avx512_bf16"]) == 0
    out = capsys.readouterr().out
    assert "0.820" in out and "0.810" not in out
    leaderboard.append_row(path, _row(2, loss="dice", test_iou=0.83, config_hash="c"))
    assert main(["leaderboard", "--results", str(path), "--markdown", "--loss", "dice"]) == 0
    out = capsys.readouterr().out
    assert "0.830" in out and "0.820" not in out and "0.810" not in out
    old = _write_old_file(tmp_path / "old.csv", [_old_row(0, 0.8)])
    assert main(["leaderboard", "--results", str(old), "--cpu-kind", "AMD EPYC Zen 5, avx512_bf16"]) == 0
    assert "0.800" not in capsys.readouterr().out


# ----- the schema grows; older and foreign files ------------------------------------------------


def _head_header() -> list[str]:
    """The columns of experiments.csv as committed before kseg 0.2 (no group_hash, no recipe)."""
    return (
        "timestamp,run_id,model,loss,seed,dataset,split_seed,image_size,eval_size,base_filters,epochs,epochs_run,"
        "best_epoch,test_iou,test_dice,test_dataset_iou,test_iou_common_nevus,test_iou_atypical_nevus,"
        "test_iou_melanoma,val_iou,params,train_seconds,device,backend,keras_version,precision,jit_compile,preset,"
        "config_hash,status,error"
    ).split(",")


def _old_row(seed: int, test_iou: float, **changes) -> dict:
    row = dict(
        timestamp=f"2025-01-0{seed + 1}T00:00:00+00:00",
        run_id=f"unet-bce-seed{seed}-00000000000{seed}",
        model="unet",
        loss="bce",
        seed=seed,
        dataset="ph2",
        split_seed=seed,
        image_size=128,
        eval_size=256,
        base_filters=16,
        epochs=40,
        epochs_run=40,
        best_epoch=30,
        test_iou=test_iou,
        test_dice=test_iou + 0.05,
        test_dataset_iou=test_iou,
        test_iou_common_nevus=0.9,
        test_iou_atypical_nevus=0.8,
        test_iou_melanoma=0.7,
        val_iou=test_iou,
        params=1000,
        train_seconds=100.0,
        device="Some CPU (2 cores)",
        backend="tensorflow",
        keras_version="3.10.0",
        precision="float32",
        jit_compile=False,
        preset="cpu",
        config_hash=f"00000000000{seed}",
        status="ok",
        error="",
    )
    row.update(changes)
    return row


def _write_old_file(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_head_header(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_helper_header_is_the_committed_one():
    """_head_header() is the header of experiments.csv as of commit e3c7178 (where git can tell)."""
    try:
        shown = subprocess.run(
            ["git", "show", "e3c7178:experiments.csv"], cwd=REPO, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("git is not available")
    if shown.returncode:
        pytest.skip("not a git checkout with commit e3c7178")
    assert shown.stdout.splitlines()[0].split(",") == _head_header()


def test_digits_only_hashes_keep_their_leading_zeros(tmp_path):
    path = tmp_path / "lb.csv"
    leaderboard.append_row(path, _row(0, config_hash="012345678901", group_hash="000000000042", run_id="0007"))
    table = leaderboard.read(path)
    assert table.loc[0, "config_hash"] == "012345678901"
    assert table.loc[0, "group_hash"] == "000000000042" and table.loc[0, "run_id"] == "0007"
    assert leaderboard.completed_hashes(path) == {"012345678901"}


def test_a_file_with_the_old_header_loads(tmp_path):
    path = _write_old_file(tmp_path / "old.csv", [_old_row(0, 0.8), _old_row(1, 0.82)])
    table = leaderboard.read(path)
    assert list(table.columns) == list(leaderboard.COLUMNS)
    assert list(table["config_hash"]) == ["000000000000", "000000000001"]
    assert table["group_hash"].isna().all() and table["schedule"].isna().all()
    assert list(table["test_iou"]) == [0.8, 0.82]
    assert leaderboard.completed_hashes(path) == {"000000000000", "000000000001"}


def test_a_row_with_new_columns_widens_an_old_file(tmp_path):
    path = _write_old_file(tmp_path / "old.csv", [_old_row(0, 0.8)])
    leaderboard.append_row(path, _row(1, group_hash="g1", schedule="cosine", tta="flip"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[: len(_head_header())] == _head_header()  # old columns first, in their order
    assert {"group_hash", "schedule", "tta"} <= set(header)
    assert (rows[0]["group_hash"], rows[0]["schedule"], rows[0]["tta"]) == ("", "", "")
    assert rows[0]["config_hash"] == "000000000000" and rows[0]["test_iou"] == "0.8"
    assert (rows[1]["group_hash"], rows[1]["schedule"], rows[1]["tta"]) == ("g1", "cosine", "flip")
    table = leaderboard.read(path)
    assert list(table["run_id"]) == ["unet-bce-seed0-000000000000", "r1"]
    # A row with no new column appends under the (widened) header as it is.
    leaderboard.append_row(path, _row(2))
    assert len(leaderboard.read(path)) == 3


def test_a_foreign_csv_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "foreign.csv"
    path.write_text("a,b\n1,2\n")
    for action in (
        lambda: leaderboard.append_row(path, _row(0, group_hash="g")),
        lambda: leaderboard.read(path),
        lambda: leaderboard.merge(path, tmp_path / "lb.csv"),
    ):
        with pytest.raises(ValueError, match="not kseg's leaderboard schema"):
            action()
    assert path.read_text() == "a,b\n1,2\n"


# ----- grouping -------------------------------------------------------------------------------


def test_runs_group_by_group_hash_not_by_their_shown_columns():
    """An --epochs 3 run of the same model, loss, dataset and preset is another experiment, not
    another seed of the 40-epoch one."""
    rows = [_row(i, epochs=40, group_hash="g40", test_iou=0.8 + i / 100, device="cpu") for i in range(3)]
    rows.append(_row(3, epochs=3, group_hash="g3", test_iou=0.5, device="cpu"))
    summary = leaderboard.summarise(pd.DataFrame(rows))
    assert list(summary["group"]) == ["g40", "g3"]
    assert list(summary["n"]) == [3, 1]
    assert summary.loc[0, "mean"] == pytest.approx(0.81)
    assert list(summary["recipe"]) == ["32px w4 40ep plateau", "32px w4 3ep plateau"]
    text = leaderboard.format_summary(summary)
    assert "(n=3)" in text and "(n=1)" in text and "40ep" in text and "3ep" in text


def test_the_ranking_and_the_chart_show_the_device(tmp_path, monkeypatch):
    rows = [_row(0, group_hash="a", device="gpu"), _row(1, group_hash="b", device="Fake CPU @ 2GHz (2 cores)")]
    summary = leaderboard.summarise(pd.DataFrame(rows))
    text = leaderboard.format_summary(summary)
    assert "device" in text.splitlines()[0]
    assert "Fake CPU @ 2GHz (2 cores)" in text and any(" gpu " in line for line in text.splitlines()[1:])

    from matplotlib.figure import Figure

    figures, savefig = [], Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    leaderboard.plot(summary, tmp_path / "chart.png")
    labels = [label.get_text() for label in figures[0].axes[0].get_yticklabels()]
    assert len(labels) == 2
    # What differs between the groups (here the device) is part of each label, on a line of its own.
    assert any("Fake CPU @ 2GHz (2 cores)" in label.splitlines() for label in labels)
    assert any("gpu" in label.splitlines() for label in labels)


def test_legacy_rows_group_by_their_recorded_columns(tmp_path):
    """Rows of a file from before group_hash: three seeds of one config are one group; a row that
    differs in epochs, precision or device is its own group."""
    rows = [_old_row(seed, 0.80 + seed / 100) for seed in range(3)]
    rows += [
        _old_row(3, 0.5, epochs=3, epochs_run=3),
        _old_row(4, 0.6, precision="mixed_bfloat16"),
        _old_row(5, 0.7, device="gpu"),
    ]
    path = _write_old_file(tmp_path / "old.csv", rows)
    summary = leaderboard.summarise(leaderboard.read(path))
    assert sorted(summary["n"]) == [1, 1, 1, 3]
    top = summary.iloc[0]
    assert (top["n"], top["mean"]) == (3, pytest.approx(0.81))
    assert top["group"].startswith("legacy-")
    assert "128px w16 40ep plateau" == top["recipe"]
    # The same rows read twice group alike, and new rows (with group_hash) join no legacy group.
    again = leaderboard.summarise(leaderboard.read(path))
    assert list(again["group"]) == list(summary["group"])
    leaderboard.append_row(path, {**{k: v for k, v in _old_row(6, 0.9).items() if v != ""}, "group_hash": "new"})
    mixed = leaderboard.summarise(leaderboard.read(path))
    assert sorted(mixed["n"]) == [1, 1, 1, 1, 3] and "new" in set(mixed["group"])


# ----- the chart leaves the plotting backend alone ---------------------------------------------


def test_plot_leaves_the_matplotlib_backend_alone(pdf_backend, tmp_path):
    summary = leaderboard.summarise(pd.DataFrame([_row(0), _row(1, model="segnet", config_hash="x")]))
    leaderboard.plot(summary, tmp_path / "chart.png")
    assert matplotlib.get_backend() == pdf_backend
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_a_leaderboard_without_ok_rows_summarises_to_nothing(tmp_path):
    """A grid whose every run failed or diverged still ends with a summary, not a traceback."""
    path = tmp_path / "lb.csv"
    leaderboard.append_row(path, _row(0, status="failed", error="MemoryError: x"))
    leaderboard.append_row(path, _row(1, status="nan", error="loss became NaN", group_hash="g"))
    table = leaderboard.read(path)
    assert leaderboard.summarise(table).empty
    assert leaderboard.format_summary(leaderboard.summarise(table)) == "No completed runs yet."
    assert leaderboard.markdown_report(table) == "No completed runs yet."
    assert leaderboard.summarise(leaderboard.read(tmp_path / "absent.csv")).empty


def test_paired_comparison_pairs_by_seed_and_counts_the_runs_that_gained(tmp_path, capsys):
    rows = []
    base_scores = {("unet", 0): 0.80, ("unet", 1): 0.90, ("segnet", 0): 0.70, ("segnet", 1): 0.75}
    gains = {("unet", 0): 0.04, ("unet", 1): -0.01, ("segnet", 0): 0.02, ("segnet", 1): 0.03}
    for i, ((model, seed), score) in enumerate(base_scores.items()):
        rows.append(_row(i, model=model, seed=seed, split_seed=seed, test_iou=score, config_hash=f"b{i}"))
        rows.append(
            _row(
                i,
                model=model,
                seed=seed,
                split_seed=seed,
                test_iou=score + gains[model, seed],
                config_hash=f"n{i}",
                init_source="isic:abc",
            )
        )
    rows.append(_row(9, model="unet", seed=2, split_seed=2, config_hash="n9", init_source="isic:abc"))  # no partner
    table = pd.DataFrame(rows)
    base, new = "32px w4 2ep plateau", "32px w4 2ep plateau init=isic"
    report = leaderboard.paired_comparison(table, base, new)
    lines = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    # unet: gains +0.04 and -0.01 -> mean +0.015, std 0.0354; segnet: +0.02, +0.03 -> +0.025, 0.0071.
    assert "| 2 | 0.850 +- 0.071 | 0.865 +- 0.035 | +0.015 +- 0.035 | 1 of 2 |" in lines["unet"]
    assert "| 0.725 +- 0.035 | 0.750 +- 0.042 | +0.025 +- 0.007 | 2 of 2 |" in lines["segnet"]
    assert "gain +0.0200 on average; 3 of 4 runs gained; 1 run(s) without a partner left out." in report
    assert "No ok rows of the recipe 'nothing'" in leaderboard.paired_comparison(table, "nothing", new)

    path = tmp_path / "lb.csv"
    for row in rows:
        leaderboard.append_row(path, row)
    from kseg.cli import main

    assert main(["leaderboard", "--results", str(path), "--paired", base, new]) == 0
    assert "3 of 4 runs gained" in capsys.readouterr().out


def test_recipe_comparison_names_each_start_and_scores_each_source_apart():
    def run(i, source, val_ph2, **extra):
        return _row(
            i,
            seed=i % 2,
            config_hash=f"{source}{i}",
            group_hash=source,
            init_source=f"isic:{source}",
            val_iou=0.8,
            val_iou_source_ph2=val_ph2,
            ext_isic2018_dev_iou=0.7 + i / 100,
            ext_isic2018_dev_dataset_iou=0.5,
            **extra,
        )

    # Two pretrainings (8 and 16 epochs) give the fine-tunes one recipe label; the start tells them apart.
    table = pd.DataFrame([run(0, "pre8", 0.86), run(1, "pre8", None), run(2, "pre16", 0.88), run(3, "pre16", 0.90)])
    lines = leaderboard.recipe_comparison(table, "unet", "bce").splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:2] == ["recipe", "starts from"] and "val IoU ph2" in header and "isic2018_dev IoU" in header
    assert "isic2018_dev_dataset IoU" not in header
    rows = {
        cells[1]: dict(zip(header, cells))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    }
    assert rows["isic:pre16"]["val IoU ph2"] == "0.890 +- 0.014"  # mean and std of 0.88, 0.90
    assert rows["isic:pre8"]["val IoU ph2"] == "0.860"  # the one run that scored it
    assert rows["isic:pre8"]["isic2018_dev IoU"] == "0.705 +- 0.007"
    assert "starts from" not in leaderboard.recipe_comparison(table.drop(columns="init_source"), "unet", "bce")


def test_paired_comparison_tests_per_image_differences_with_holm(tmp_path):
    """Two pairs over two folds of 20 images each: unet's new recipe is +0.02 on every image
    (found: p = 0), segnet's is the same scores shuffled between images of a fold (mean 0)."""
    rng = np.random.default_rng(0)
    rows, per_image = [], []
    for model in ("unet", "segnet"):
        for fold in (0, 1):
            cases = [f"c{fold}_{k}" for k in range(20)]
            scores = rng.uniform(0.6, 0.9, size=20)
            new_scores = scores + 0.02 if model == "unet" else rng.permutation(scores)
            for recipe, values in (("base", scores), ("new", new_scores)):
                config_hash = f"{model}-{recipe}-{fold}"
                extra = {"init_source": "isic:abc"} if recipe == "new" else {}
                rows.append(
                    _row(
                        0,
                        model=model,
                        seed=0,
                        split_seed=0,
                        folds=2,
                        fold=fold,
                        config_hash=config_hash,
                        test_iou=float(values.mean()),
                        **extra,
                    )
                )
                per_image += [
                    dict(
                        run_id=config_hash,
                        config_hash=config_hash,
                        set="test",
                        case_id=c,
                        iou=v,
                        dice=v,
                        iou_plain=v,
                        dice_plain=v,
                    )
                    for c, v in zip(cases, values)
                ]
    table, scores = pd.DataFrame(rows), pd.DataFrame(per_image)
    base, new = "32px w4 2ep plateau cv2", "32px w4 2ep plateau cv2 init=isic"
    report = leaderboard.paired_comparison(table, base, new, per_image=scores)
    lines = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert "| +0.020 [+0.020, +0.020] | 40 | 0 |" in lines["unet"]
    segnet = lines["segnet"].split(" | ")
    assert segnet[-3].startswith("+0.000") and segnet[-2] == "40" and float(segnet[-1].strip(" |")) > 0.5
    assert "2 of 2" in lines["unet"]  # the per-run columns are still there
    without = leaderboard.paired_comparison(table, base, new)
    assert "per-image gain" not in without and "per-image gain" in report


def test_per_image_rows_with_the_border_scores_widen_an_older_companion_file(tmp_path):
    """A companion file written before the border and calibration scores keeps its rows (their
    new cells empty) when a run with them appends."""
    results = tmp_path / "lb.csv"
    old_header = ["run_id", "config_hash", "set", "case_id", "iou", "dice", "iou_plain", "dice_plain"]
    leaderboard.per_image_path(results).write_text(",".join(old_header) + "\nr0,h0,test,c1,0.5,0.6,0.5,0.6\n")
    scores = dict(iou=0.7, dice=0.8, iou_plain=0.7, dice_plain=0.8, hd95=3.0, hd=4.0, assd=1.0, nsd=0.9, ece=0.02)
    leaderboard.append_per_image(results, [dict(run_id="r1", config_hash="h1", set="test", case_id="c1", **scores)])
    table = leaderboard.read_per_image(results)
    assert list(table.columns) == list(leaderboard.PER_IMAGE_COLUMNS) and len(table) == 2
    assert pd.isna(table.loc[0, "hd95"]) and table.loc[1, "hd95"] == 3.0 and table.loc[1, "ece"] == 0.02


@pytest.mark.parametrize(
    "column, lower",
    [
        ("test_hd95", True),
        ("ext_isic_ece", True),
        ("test_ece_plain", True),
        ("test_failure_fraction", True),
        ("test_nsd", False),
        ("test_iou", False),
    ],
)
def test_distances_and_errors_are_lower_is_better(column, lower):
    assert leaderboard.lower_is_better(column) is lower


def test_the_summary_ranks_a_distance_lowest_first_and_pools_its_per_image_scores(tmp_path):
    rows, per_image = [], []
    for model, hd95 in (("unet", 9.0), ("segnet", 4.0)):
        for seed in (0, 1):
            config_hash = f"{model}{seed}"
            rows.append(
                _row(
                    seed,
                    model=model,
                    config_hash=config_hash,
                    test_hd95=hd95 + seed,
                    split_seed=seed,
                    split_sizes="10/5/5",
                )
            )
            per_image += [
                dict(
                    run_id=config_hash,
                    config_hash=config_hash,
                    set="test",
                    case_id=f"c{k}",
                    iou=0.8,
                    dice=0.9,
                    iou_plain=0.8,
                    dice_plain=0.9,
                    hd95=hd95 + seed + k,
                    hd=0,
                    assd=0,
                    nsd=1,
                    ece=0,
                )
                for k in range(5)
            ]
    summary = leaderboard.summarise(pd.DataFrame(rows), metric="test_hd95", per_image=pd.DataFrame(per_image))
    assert list(summary["model"]) == ["segnet", "unet"] and list(summary["mean"]) == [4.5, 9.5]
    assert summary.loc[0, "note"] == "best" and summary.loc[0, "pooled"] == pytest.approx(6.5)
    assert "test_hd95" in leaderboard.format_summary(summary, metric="test_hd95")


def test_a_paired_distance_counts_a_fall_as_a_gain():
    rows = [
        _row(seed, model="unet", config_hash=f"{recipe}{seed}", test_hd95=value, **extra)
        for seed in (0, 1)
        for recipe, value, extra in (("base", 10.0 + seed, {}), ("new", 7.0 + seed, {"init_source": "isic:abc"}))
    ]
    report = leaderboard.paired_comparison(
        pd.DataFrame(rows), "32px w4 2ep plateau", "32px w4 2ep plateau init=isic", metric="test_hd95"
    )
    assert "| -3.000 +- 0.000 | 2 of 2 |" in report and "2 of 2 runs gained" in report


def test_the_pareto_front_keeps_what_nothing_beats_on_both():
    points = pd.DataFrame({"mean": [0.80, 0.85, 0.84, 0.90, 0.90], "cost": [1.0, 2.0, 3.0, 5.0, 6.0]})
    # 0.84 at 3 is beaten by 0.85 at 2; 0.90 at 6 by 0.90 at 5 (equal score, cheaper)
    assert leaderboard.pareto_front(points, "cost").tolist() == [True, True, False, True, False]


def test_pareto_table_and_cost_plot_from_rows_with_costs(tmp_path):
    rows = []
    for i, (model, iou, seconds, ms) in enumerate(
        [("unet", 0.86, 300, 9.0), ("egeunet", 0.85, 60, 1.5), ("segnet", 0.84, 250, 8.0)]
    ):
        for seed in (0, 1):
            rows.append(
                _row(
                    seed,
                    model=model,
                    config_hash=f"{model}{seed}",
                    test_iou=iou + seed / 1000,
                    train_seconds=seconds,
                    infer_ms_per_image=ms,
                    cpu_kind="AMD EPYC Zen 4, avx512_bf16",
                )
            )
    table = pd.DataFrame(rows)
    report = leaderboard.pareto_table(table, "train_seconds")
    assert "(2 of 3)" in report and "| egeunet |" in report and "| unet |" in report and "| segnet |" not in report
    assert report.index("| egeunet |") < report.index("| unet |")  # cheapest first
    assert "AMD EPYC Zen 4, avx512_bf16" in report and "| 1 |" in report  # 60 s = 1 training minute
    path = leaderboard.cost_plot(table, tmp_path / "cost.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="Unknown cost 'watts'"):
        leaderboard.pareto_table(table, "watts")


def test_columns_table_spreads_any_columns_over_seeds_ranked_by_the_metric():
    rows = [
        _row(seed, model=model, config_hash=f"{model}{seed}", test_iou=iou, test_hd95=hd95 + seed, test_ece=0.01)
        for seed in (0, 1)
        for model, iou, hd95 in (("unet", 0.8, 10.0), ("egeunet", 0.7, 20.0))
    ]
    table = leaderboard.columns_table(pd.DataFrame(rows), ["test_iou", "test_hd95", "test_ece"], metric="test_hd95")
    lines = table.splitlines()
    assert lines[0] == "| model | loss | recipe | precision | n | test_iou | test_hd95 | test_ece |"
    assert lines[2].startswith("| unet |") and "| 10.5 +- 0.7 |" in lines[2] and lines[2].endswith("| 0.010 |")
    with pytest.raises(ValueError, match="Unknown leaderboard column"):
        leaderboard.columns_table(pd.DataFrame(rows), ["test_nope"])
