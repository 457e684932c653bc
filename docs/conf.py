"""Sphinx configuration of the sklearn-vae documentation.

Build it with ``python -m sphinx -W -b html docs docs/_build/html``; set
``SKLEARN_VAE_DOCS_QUICK=1`` to run the gallery examples with short training
(the test suite does).
"""

import sklearn_vae

project = "sklearn-vae"
author = "sklearn-vae developers"
copyright = "sklearn-vae developers"
release = sklearn_vae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build"]
default_role = "obj"

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
# numpydoc lists the methods itself; autosummary would list them a second time.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False


def _skip_inherited_from_other_packages(app, what, name, obj, skip, options):
    """Document the package's own API; scikit-learn documents its mixins' methods.

    ``set_output``, ``get_metadata_routing`` and the ``set_*_request`` methods
    come with every scikit-learn estimator, and their docstrings point into
    scikit-learn's own documentation.
    """
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and module and not module.startswith("sklearn_vae"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_inherited_from_other_packages)


html_theme = "pydata_sphinx_theme"
html_title = "sklearn-vae"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "reset_modules": ("matplotlib",),
}
