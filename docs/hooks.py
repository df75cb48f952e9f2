"""mkdocs hook: the notebooks executed for the site draw their plotly figures as HTML.

A kernel without a front end gets plotly's bare JSON mimetype, which a static page cannot show;
the kernels mkdocs-jupyter starts inherit this process's environment, so a renderer set here
reaches them. `notebook_connected` loads plotly.js from its CDN in the reader's browser instead of
inlining 4.6 MB into every page.
"""

import os

PLOTLY_RENDERER = "notebook_connected"


def on_config(config):
    os.environ.setdefault("PLOTLY_RENDERER", PLOTLY_RENDERER)
    return config
