"""The experiment harness: grids of training runs from one recipe declaration, each run's
identity and artefacts, the leaderboard they append to, and its statistics.

What the library (``kseg``'s top level) offers a user who builds, trains, scores or serves a
model needs nothing here; this package builds on it, and no library module imports it
(``tests/test_layout.py``). Its modules load on first use, like ``kseg``'s:

* :mod:`kseg.experiment.config`: ``RunConfig``, its knobs (flag, column, label) and its identity;
* :mod:`kseg.experiment.presets`: the presets as data;
* :mod:`kseg.experiment.training`: compile and fit one config;
* :mod:`kseg.experiment.sources`: the data a grid shares (``DataCache``);
* :mod:`kseg.experiment.run`: one run: data, fit, refine, evaluate, artefacts, row;
* :mod:`kseg.experiment.grid`, :mod:`kseg.experiment.executors`: the grid's configs, resume and
  pretraining; where runs execute;
* :mod:`kseg.experiment.launch`: a grid from its flags: the checks before any run, then the run;
* :mod:`kseg.experiment.transfer`: starting from another model's weights; the overlap guard;
* :mod:`kseg.experiment.group_ensembles`: the grid's ensemble rows;
* :mod:`kseg.experiment.leaderboard`, :mod:`kseg.experiment.stats`: the leaderboard; intervals
  and paired tests;
* :mod:`kseg.experiment.ready_model`: making a run kseg's ready model (``python -m kseg.pretrained``).
"""

from kseg._lazy import loader

__all__ = [
    "config",
    "executors",
    "grid",
    "group_ensembles",
    "launch",
    "leaderboard",
    "presets",
    "ready_model",
    "run",
    "sources",
    "stats",
    "training",
    "transfer",
]
__getattr__, __dir__ = loader(__name__, {name: f"kseg.experiment.{name}" for name in __all__})
