"""CI must run what the README tells a user to run (the two stay word for word the same), and the
Python examples of the README and docs/python.md run."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.backend_independent

REPO = Path(__file__).resolve().parents[1]


def _ci_line_after(marker: str) -> str:
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    return lines[lines.index(marker) + 1]


def test_ci_installs_exactly_as_the_readme_says():
    install = _ci_line_after("# README: install")
    readme = (REPO / "README.md").read_text()
    assert re.search(re.escape(install) + r" && KERAS_BACKEND=torch python -m pytest -q -n 2\n", readme)


def test_ci_runs_the_readme_test_command_per_backend():
    test = _ci_line_after("# README: test")
    assert test.startswith("KERAS_BACKEND=$backend python -m pytest -q -n 2")
    assert "`KERAS_BACKEND=<backend> python -m pytest -q -n 2`" in (REPO / "README.md").read_text()


# ----- docs/python.md's example runs (on the synthetic set, shrunk to seconds) ------------


def _python_page_example() -> str:
    match = re.search(r"```python\n(.*?)```", (REPO / "docs" / "python.md").read_text(), flags=re.S)
    assert match, "docs/python.md: no ```python block"
    return match.group(1)


# (the page's text, what the test runs instead): each must occur, so an edit of the page shows up here.
SHRINK = [
    ("image_size=256", "image_size=32"),
    ("input_shape=(256, 256, 3)", "input_shape=(32, 32, 3)"),
    ("base_filters=64", "base_filters=4"),
    ("epochs=100", "epochs=1"),
]


def test_the_python_page_example_runs(tmp_path, monkeypatch):
    import keras

    import kseg

    code = _python_page_example()
    for old, new in SHRINK:
        assert old in code, f"the docs/python.md example no longer says {old!r}; update SHRINK"
        code = code.replace(old, new)
    assert "256" not in code and "load_ph2" in code

    loaded = []

    def load_ph2(*args, image_size=256, **kwargs):
        loaded.append(image_size)
        return kseg.data.synthetic(n=200, image_size=image_size)

    monkeypatch.setattr(kseg.data, "load_ph2", load_ph2)
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/python.md", "exec"), namespace)
    assert loaded == [32]
    assert len(namespace["parts"].train) == 100 and len(namespace["parts"].val) == 50
    saved = tmp_path / "segnet.keras"
    assert saved.exists()
    restored = keras.saving.load_model(saved)
    images = namespace["parts"].test.images[:2]
    np.testing.assert_allclose(
        restored.predict(images, verbose=0), namespace["model"].predict(images, verbose=0), atol=1e-6
    )


@pytest.mark.backend_independent
def test_the_readme_new_decoder_example_builds_once_registered(monkeypatch):
    """README "Add an architecture": its decoder file, plus the registry line, is a working model."""
    from kseg import models
    from kseg.models import decoders

    section = (REPO / "README.md").read_text().split("## Add an architecture", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md (Add an architecture)", "exec"), namespace)
    monkeypatch.setitem(decoders.REGISTRY, "bilinear", *namespace["DECODERS"])
    model = models.build("bilinear:unet", (32, 32, 3), base_filters=4, depth=3)
    assert model.output.shape == (None, 32, 32, 1) and model.get_layer("bilinear_up") is not None
    assert "bilinear" in models.available()


# ----- the API calls of README.md and docs/ work as written ------------------------------------------------


def _readme_calls(function: str) -> list[str]:
    """Every ``function(...)`` call README.md and docs/ write in backquotes, as written."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages).replace("\n  ", " ")
    calls = re.findall(rf"`((?:[\w.]+\.)?{re.escape(function)}\([^`]*\))`", text)
    assert calls, f"README.md and docs/ no longer show {function}(...)"
    return calls


def test_the_readme_build_encoder_call_takes_an_encoder_name():
    import kseg

    for call in _readme_calls("build_encoder"):
        for name in ("mobilenetv2", "unet"):  # a keras.applications encoder and one of kseg's
            encoder = eval(call, {"kseg": kseg, "build_encoder": kseg.models.build_encoder, "name": name})
            assert encoder.name == f"{name}_encoder" and {"P1", "P2", "P3"} <= set(encoder.output)


def test_the_readme_evaluate_call_scores_arrays_and_datasets():
    import keras

    import kseg

    keras.utils.set_random_seed(0)
    data = kseg.data.synthetic(n=12, image_size=32)
    model = kseg.models.build("unet", (32, 32, 3), base_filters=4, depth=2)
    scores = []
    for images, masks in ((data.images, data.masks), (data, data)):
        names = {"kseg": kseg, "model": model, "images": images, "masks": masks}
        for call in _readme_calls("evaluate"):
            call = call.replace("refinement=...", "refinement=kseg.refine.Refinement()")
            scores.append(eval(call, names))
    assert all(isinstance(s, kseg.evaluation.Evaluation) for s in scores)
    assert len({round(s.iou, 6) for s in scores}) == 1 and len(scores[0].per_image) == 12


def test_the_data_cache_docstring_shows_how_to_make_one():
    from kseg.experiment.sources import DataCache

    example = DataCache.__doc__.split("::", 1)[1].split("Args:", 1)[0]
    made = [line.split("=", 1)[1].split("#")[0] for line in example.splitlines() if "DataCache(" in line]
    assert len(made) >= 3
    caches = [eval(source, {"DataCache": DataCache}) for source in made]
    assert {cache.kind for cache in caches} >= {"synthetic", "ph2", "folder"}
    synthetic = next(cache for cache in caches if cache.kind == "synthetic")
    assert len(synthetic.get(32, synthetic_n=10).ids) == 10


# ----- README "Use a trained model": its predict, evaluate and leaderboard lines run as written ---------------


def _readme_model_commands() -> list[list[str]]:
    section = (REPO / "README.md").read_text().split("## Use a trained model", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [shlex.split(line.split("#")[0])[3:] for line in block.splitlines() if line.startswith("python -m kseg")]


def test_the_readme_model_commands_run_on_a_trained_run(tmp_path, monkeypatch, capsys):
    from kseg.cli import main, run_grid_command
    from tests.data_utils import write_synthetic_folder

    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    common = ["--preset", "smoke", "--dataset", "synthetic", "--quiet", "--models", "unet", "--losses", "bce"]
    assert run_grid_command([*common, "--results", "experiments.csv", "--output", "runs"]) == 0
    (run,) = Path("runs").iterdir()
    write_synthetic_folder(tmp_path / "DIR", n=4, mask_suffix="_segmentation")
    Path("my_images").symlink_to(tmp_path / "DIR" / "images")
    commands = _readme_model_commands()
    ran = []
    for argv in commands:
        if argv[0] == "export":  # tests/test_export.py exports every registered model in each format
            continue
        argv = [word.replace("runs/RUN", str(run)) for word in argv]
        assert main(argv) == 0, f"README.md: `python -m kseg {' '.join(argv)}`"
        ran.append(argv[0])
    assert ran == ["predict", "evaluate", "leaderboard"]
    assert len(list((tmp_path / "masks" / "masks").glob("*.png"))) == 4
    assert "IoU" in capsys.readouterr().out
