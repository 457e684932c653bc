"""The documentation builds without warnings, and its examples run.

The Sphinx build executes every gallery example with
``SKLEARN_VAE_DOCS_QUICK=1`` (short training), so a broken example, a bad
docstring or a dangling reference fails the suite, as ``-W`` makes every
warning an error. The docstring examples of the public API run as doctests.
"""

import doctest
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(path.stem for path in (ROOT / "examples").glob("plot_*.py"))
DOCTESTED_MODULES = [
    "sklearn_vae.metrics",
    "sklearn_vae.plotting._ellipses",
    "sklearn_vae.plotting._latent_space",
    "sklearn_vae.plotting._posterior_map",
    "sklearn_vae.plotting._samples",
    "sklearn_vae.plotting._training_curves",
]


def test_gallery_has_every_promised_example():
    promised = [
        "plot_anomaly_detection",
        "plot_gmm_covariances",
        "plot_gmm_selection",
        "plot_objectives",
        "plot_posterior_map",
        "plot_vade_digits",
        "plot_vae_latent_space",
        "plot_vae_pipeline",
    ]
    assert set(promised) <= set(EXAMPLES)


@pytest.mark.parametrize("module_name", DOCTESTED_MODULES)
def test_docstring_examples(module_name):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_docs_build_without_warnings(tmp_path):
    for package in ("sphinx", "numpydoc", "pydata_sphinx_theme", "sphinx_gallery"):
        pytest.importorskip(package)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(ROOT / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SKLEARN_VAE_DOCS_QUICK": "1", "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    html = tmp_path / "html"
    for page in ["index", "getting_started", "command_line", "api"]:
        assert (html / f"{page}.html").is_file()
    for example in EXAMPLES:
        page = (html / "auto_examples" / f"{example}.html").read_text()
        # Every example ran and drew at least one figure.
        assert "sphx_glr_" + example + "_001.png" in page
    guide = (html / "user_guide" / "vade.html").read_text()
    assert "math notranslate" in guide
    api = (html / "gen_modules" / "sklearn_vae.VariationalGMMPrior.html").read_text()
    assert "predict_proba" in api
