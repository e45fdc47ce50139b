"""The experiments.csv leaderboard: its schema, a locked atomic append, reading and summarising.

Rows are only ever added. Each append takes a file lock (so runners in several processes can
share one file), writes the old contents plus the new row to a temporary file beside it and
renames that over the original: a crash or Ctrl-C at any moment leaves either the old or the
new file, never a truncated one.

The schema grows: a row may bring a column that an older file lacks, and the append then adds
that column (empty for the old rows). Any file with the identity columns loads.

Runs are grouped by ``group_hash``: a run's whole identity minus its seeds
(:meth:`kseg.experiment.config.RunConfig.group_hash`), so a mean and a spread are only ever over runs that
differ by seed alone.

The package's modules, each one job (every name is re-exported here, so ``kseg.experiment.leaderboard.read``
and the like work as before):

* :mod:`kseg.experiment.leaderboard.schema`: the columns, required ones, statuses, per-image columns;
* :mod:`kseg.experiment.leaderboard.store`: the locked atomic append, the per-image companion file, read, merge;
* :mod:`kseg.experiment.leaderboard.summary`: groups, the ranking over seeds, pooled intervals and ties;
* :mod:`kseg.experiment.leaderboard.compare`: recipe ablations and paired recipe comparisons;
* :mod:`kseg.experiment.leaderboard.pareto`: accuracy against cost, the front and its plot;
* :mod:`kseg.experiment.leaderboard.views`: the Markdown report, ensemble and transfer tables, the plot.
"""

from kseg.experiment.leaderboard.compare import paired_comparison, recipe_comparison
from kseg.experiment.leaderboard.pareto import COSTS, cost_plot, pareto_front, pareto_table
from kseg.experiment.leaderboard.schema import (
    COLUMNS,
    EXTERNAL_COLUMN,
    PER_IMAGE_COLUMNS,
    PER_IMAGE_SCORES,
    REQUIRED,
    SOURCE_COLUMN,
    STATUSES,
    TEXT_COLUMNS,
    external_prefix,
    folder_label,
    known_column,
    lower_is_better,
    per_image_score,
)
from kseg.experiment.leaderboard.store import (
    append_per_image,
    append_row,
    completed_hashes,
    merge,
    per_image_path,
    read,
    read_per_image,
)
from kseg.experiment.leaderboard.summary import (
    SHOWN,
    compare_groups,
    format_summary,
    latest_ok_rows,
    recipe,
    summarise,
    with_groups,
)
from kseg.experiment.leaderboard.views import columns_table, ensemble_table, markdown_report, plot, transfer_report

__all__ = [
    "columns_table",
    "COSTS",
    "cost_plot",
    "pareto_front",
    "pareto_table",
    "COLUMNS",
    "ensemble_table",
    "EXTERNAL_COLUMN",
    "SOURCE_COLUMN",
    "known_column",
    "lower_is_better",
    "per_image_score",
    "folder_label",
    "external_prefix",
    "REQUIRED",
    "TEXT_COLUMNS",
    "STATUSES",
    "append_row",
    "PER_IMAGE_COLUMNS",
    "PER_IMAGE_SCORES",
    "per_image_path",
    "append_per_image",
    "read_per_image",
    "merge",
    "read",
    "completed_hashes",
    "SHOWN",
    "recipe",
    "with_groups",
    "latest_ok_rows",
    "compare_groups",
    "summarise",
    "format_summary",
    "markdown_report",
    "recipe_comparison",
    "paired_comparison",
    "transfer_report",
    "plot",
]
