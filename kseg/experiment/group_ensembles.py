"""The grid's ensemble rows: the ensemble of a group's folds (``--folds K``), or of its seeds on
one fixed ``--split-seed``, scored on each ``--external`` set beside the mean of its members.

A cross-validated group's members have between them trained on every case of the dataset, so
the ensemble has no test split of its own; the external sets, which no member saw, are where it
is scored. Its row is of its own kind (``kind`` = ``fold_ensemble`` or ``seed_ensemble``, with
``members``): the leaderboard's ranking and paired comparisons leave such rows out, and
:func:`kseg.experiment.leaderboard.ensemble_table` lists them. The ensemble is :func:`kseg.ensemble.build_ensemble`
of the members' saved models (each under its own TTA) with the post-processing the members share.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kseg import ensemble, refine
from kseg.evaluation import evaluate
from kseg.experiment import leaderboard, transfer
from kseg.experiment.config import RunConfig
from kseg.experiment.run import base_row
from kseg.experiment.sources import DataCache

KINDS = ("fold_ensemble", "seed_ensemble")


def ensemble_groups(configs: Sequence[RunConfig]) -> dict[str, list[RunConfig]]:
    """The grid's groups whose members an ensemble can join, by group hash: every group with two
    or more runs that are its folds, or its seeds on one fixed split."""
    groups: dict[str, list[RunConfig]] = {}
    for config in configs:
        groups.setdefault(config.group_hash, []).append(config)
    return {
        group: members
        for group, members in groups.items()
        if len(members) >= 2 and (members[0].folds or len({c.split_seed for c in members}) == 1)
    }


def ensemble_hash(members: Sequence[RunConfig]) -> str:
    """12 hex digits naming the ensemble of exactly these runs."""
    return hashlib.sha256(" ".join(sorted(c.config_hash for c in members)).encode()).hexdigest()[:12]


def score_group_ensembles(
    configs: Sequence[RunConfig],
    data: DataCache,
    results: str | Path,
    output_dir: str | Path,
    print_fn: Callable[[str], None] = print,
) -> list[dict]:
    """Appends one ensemble row per eligible group (:func:`ensemble_groups`) whose members all
    have ok rows and saved models, scored on every external set of ``data``; a group whose
    ensemble row exists already is skipped. Returns the rows appended."""
    if not data.externals:
        return []
    done = leaderboard.completed_hashes(results)
    table = leaderboard.read(results)
    rows = []
    for members in ensemble_groups(configs).values():
        first, name = members[0], ensemble_hash(members)
        paths = [Path(output_dir) / c.run_id / transfer.MODEL_FILE for c in members]
        missing = [c.run_id for c, path in zip(members, paths) if c.config_hash not in done or not path.is_file()]
        if missing or name in done:
            if missing:
                print_fn(f"[ensemble] {first.model} + {first.loss}: no ensemble, {len(missing)} member(s) not done")
            continue
        start = time.perf_counter()
        row = _ensemble_row(members, paths, name, data, table)
        row["run_seconds"] = time.perf_counter() - start
        leaderboard.append_row(results, row)
        rows.append(row)
        scores = ", ".join(
            f"{folder}: {row[leaderboard.external_prefix(folder) + 'iou']:.4f} against the members' "
            f"{row[leaderboard.external_prefix(folder) + 'members_iou']:.4f}"
            for folder, _ in data.externals
        )
        print_fn(f"[ensemble] {row['run_id']} ({len(members)} members): {scores}")
    return rows


def _ensemble_row(members, paths, name: str, data: DataCache, table) -> dict:
    from kseg.predict import load_trained_model

    first = members[0]
    models = [load_trained_model(path) for path in paths]
    refinements = [refine.load_refinement(path) for path in paths]
    model = ensemble.build_ensemble(models, [r.tta for r in refinements])
    chosen = refine.Refinement(postprocess=ensemble.shared_postprocess(refinements))  # TTA is inside
    kind = KINDS[0] if first.folds else KINDS[1]
    row = {
        **base_row(first),
        "run_id": f"{first.model.replace(':', '_')}-{first.loss}-{kind.replace('_', '')}{len(members)}-{name}",
        "config_hash": name,
        "group_hash": name,
        "seed": None,
        "fold": None,
        "kind": kind,
        "members": len(members),
        "tta": "members",
        "postprocess": chosen.postprocess,
        "params": model.count_params(),
        "status": "ok",
    }
    member_rows = table[table["config_hash"].isin([c.config_hash for c in members])].drop_duplicates(
        "config_hash", keep="last"
    )
    for folder, suffix in data.externals:
        prefix = leaderboard.external_prefix(folder)
        inputs = data.external(folder, suffix, first.image_size)
        targets = data.external(folder, suffix, first.eval_size)
        row.update(evaluate(model, inputs, targets, batch_size=first.batch_size, refinement=chosen).as_row(prefix))
        if prefix + "iou" in member_rows and member_rows[prefix + "iou"].notna().all():
            members_iou = float(member_rows[prefix + "iou"].mean())
        else:  # the members ran without this set: score each as its run would have
            members_iou = float(
                np.mean(
                    [
                        evaluate(m, inputs, targets, batch_size=first.batch_size, refinement=r).iou
                        for m, r in zip(models, refinements)
                    ]
                )
            )
        row[prefix + "members_iou"] = members_iou
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items() if leaderboard.known_column(k)}


__all__ = ["KINDS", "ensemble_groups", "ensemble_hash", "score_group_ensembles"]
