import csv
import multiprocessing
import os

import pandas as pd
import pytest

from kseg import leaderboard


def _row(i: int, **extra) -> dict:
    return {"run_id": f"r{i}", "model": "unet", "loss": "bce", "seed": i, "dataset": "synthetic",
            "preset": "smoke", "backend": "jax", "precision": "float32", "test_iou": 0.5 + i / 100, "config_hash": f"h{i}",
            "status": "ok", **extra}


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
    with pytest.raises(ValueError, match="Unknown leaderboard columns"):
        leaderboard.append_row(tmp_path / "lb.csv", _row(0, colour="red"))
    with pytest.raises(ValueError, match="status must be one of"):
        leaderboard.append_row(tmp_path / "lb.csv", _row(0, status="maybe"))
    assert not (tmp_path / "lb.csv").exists()


def test_foreign_csv_is_not_touched(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not kseg's leaderboard schema"):
        leaderboard.append_row(path, _row(0))
    assert path.read_text() == "a,b\n1,2\n"


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


def test_concurrent_appends_from_processes_lose_no_row(tmp_path):
    path = tmp_path / "lb.csv"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, w, 15)) for w in range(4)]
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
    table = pd.DataFrame([
        _row(0, test_iou=0.80, config_hash="a"), _row(1, test_iou=0.90, config_hash="b"),
        _row(2, model="segnet", test_iou=0.70, config_hash="c"),
        _row(3, model="segnet", test_iou=0.99, config_hash="d", status="failed"),
    ])
    summary = leaderboard.summarise(table)
    assert list(summary["model"]) == ["unet", "segnet"]
    assert summary.loc[0, "mean"] == pytest.approx(0.85)
    assert summary.loc[0, "std"] == pytest.approx(pd.Series([0.8, 0.9]).std())
    assert list(summary["n"]) == [2, 1]
    mixed = leaderboard.summarise(pd.concat([table, pd.DataFrame([_row(4, precision="mixed_bfloat16", config_hash="e")])]))
    assert list(mixed["n"]) == [2, 1, 1]  # another precision is another group
    text = leaderboard.format_summary(summary)
    assert "0.850 +- 0.071 (n=2)" in text


def test_plot_writes_png(tmp_path):
    summary = leaderboard.summarise(pd.DataFrame([_row(0), _row(1, model="segnet", config_hash="x")]))
    path = leaderboard.plot(summary, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
        leaderboard.append_row(path, _row(i, test_iou=iou, test_dice=iou + 0.05, test_dataset_iou=iou,
                                          train_seconds=10 * (i + 1), epochs_run=5, device="cpu"))
    report = leaderboard.markdown_report(leaderboard.read(path))
    assert "| synthetic | smoke | cpu | jax | float32 | unet | bce | 0.850 +- 0.071 | 0.900 +- 0.071 | 0.850 | 2 | 15 | 5 |" in report
    assert main(["leaderboard", "--results", str(path), "--markdown"]) == 0
    assert report in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(tmp_path / "none.csv")]) == 2
