"""mkdocs hook: the site's pages show their figures and widgets with no network but the site's own.

The notebooks executed for the site draw their plotly figures as HTML: a kernel without a front end
gets plotly's bare JSON mimetype, which a static page cannot show, and the kernels mkdocs-jupyter
starts inherit this process's environment, so a renderer set here reaches them.

As plotly, nbconvert and the theme write them, the pages load plotly.js, require.js, the Jupyter
widget manager and highlight.js from CDNs, and a reader on an air-gapped machine sees blank space.
So the site serves its own copies (under assets/vendor/) and every page is pointed at them:
plotly.js and anywidget's front end come from the installed Python packages, the rest from the npm
packages pinned in NPM_PACKAGES (`npm pack` at build time, kept in .cache/docs-assets/: a few MB
that the build fetches rather than vendored files in git).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url

PLOTLY_RENDERER = "notebook_connected"  # a plotly.js script tag per figure, pointed at the site's copy below
VENDOR = "assets/vendor"  # where the site serves the copies, from its root


@dataclass(frozen=True)
class NpmPackage:
    spec: str  # name@exact version
    integrity: str  # the tarball's sha512 as the registry lists it: a changed tarball fails the build
    folder: str  # served under VENDOR/folder/
    files: tuple[str, ...]  # globs inside the package

    @property
    def version(self) -> str:
        return self.spec.rsplit("@", 1)[1]


# The readthedocs theme's code highlighting: its base.html loads highlight.js 11.8.0 from cdnjs,
# whose files this package holds.
HIGHLIGHT_JS = NpmPackage(
    "@highlightjs/cdn-assets@11.8.0",
    "sha512-gkfCH4xGBGY9xPaW+t26WpgnfpDhNhB5RtVUDLx3MHkC7ZrmKeIxXsfjzOiuOnEgRk+vydlY6XeOeglh+eVhyg==",
    "highlight.js", ("highlight.min.js", "styles/*.min.css"))  # + "languages/*.min.js" for the theme's hljs_languages
HIGHLIGHT_CDN = f"https://cdnjs.cloudflare.com/ajax/libs/highlight.js/{HIGHLIGHT_JS.version}/"
NPM_PACKAGES = (
    # nbconvert's pages load require.js (include_requirejs in mkdocs.yml): the widget manager and
    # anywidget's front end are AMD modules.
    NpmPackage("requirejs@2.3.8",
               "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
               "requirejs", ("require.js",)),
    # The manager that renders the saved widget state. ipywidgets 8.1 saves state version 2 and asks
    # for ^1.0.1 (ipywidgets/_version.py); 1.0.15 was published from the same ipywidgets commit as
    # the JupyterLab manager 5.0.16 that jupyterlab_widgets 3.0.17 installs (@jupyter-widgets/base
    # ^6.0.12, controls ^5.0.13). embed-amd.js loads its icon fonts from its own folder.
    NpmPackage("@jupyter-widgets/html-manager@1.0.15",
               "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
               "html-manager", ("dist/embed-amd.js", "dist/*.woff2", "dist/*.woff", "dist/*.ttf", "dist/*.eot",
                                "dist/*.svg")),
    HIGHLIGHT_JS,
)
# Widget modules the manager does not hold: the AMD module the site serves for each. Plotly's
# FigureWidget (TraceExplorer, UnlearnDashboard) is an anywidget; the module comes from the
# installed anywidget, so that it matches the version that saved the state.
WIDGET_MODULES = {"anywidget": ("anywidget", "nbextension/index.js")}
BUILT_IN_WIDGET_MODULES = {"@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output"}
# Plotly puts a MathJax script before every figure, for LaTeX labels; no notebook or figure here
# uses LaTeX, so the tag is dropped rather than MathJax served (npm's mathjax@3.2.2 would be it).
PLOTLY_MATHJAX = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"></script>')
WIDGET_STATE = re.compile(r'<script type="application/vnd\.jupyter\.widget-state\+json">(.*?)</script>', re.DOTALL)
VENDOR_REF = re.compile(rf"""["']([^"'\s]*\b{VENDOR}/[^"'\s]+)["']""")  # in attributes and in scripts
REMOTE = r"(?:https?:)?//[^\"']+"  # a URL with a host
REMOTE_LOAD = re.compile(rf"""\bsrc=["']({REMOTE})|<link\b[^>]*\brel="stylesheet"[^>]*\bhref="({REMOTE})"|"""
                         rf"""\bimport\s+["']({REMOTE})""")  # a script, image or style sheet; a module import


def on_config(config):
    os.environ.setdefault("PLOTLY_RENDERER", PLOTLY_RENDERER)
    return config


def on_files(files, config):
    # Fetched here, before the notebooks execute, so that a missing npm fails the build at once.
    assets = site_assets(config)
    for site_path, source in assets.items():
        files.append(File.generated(config, site_path, abs_src_path=str(source)))
    SERVED.clear()
    SERVED.update(assets)
    return files


def on_post_page(output, page, config):
    html = localize(output, page.url)
    check_offline(html, page)
    return html


SERVED: set[str] = set()  # the site paths of the copies, for the pages' check


def site_assets(config) -> dict[str, Path]:
    """{path in the site: file} of every script, style and font the pages load."""
    cache = Path(config.config_file_path).parent / ".cache" / "docs-assets"
    assets = {f"{VENDOR}/plotly/{Path(plotly_cdn_url()).name}": python_package_file("plotly", "package_data/plotly.min.js")}
    for module, (package, path) in WIDGET_MODULES.items():
        assets[f"{VENDOR}/{module}/index.js"] = python_package_file(package, path)
    for package in NPM_PACKAGES:
        folder = unpacked(package, cache)
        for source in sorted(folder.rglob("*")):
            if source.is_file():
                assets[f"{VENDOR}/{package.folder}/{source.relative_to(folder).as_posix()}"] = source
    return assets


def python_package_file(package: str, path: str) -> Path:
    from importlib.util import find_spec

    spec = find_spec(package)
    source = Path(spec.origin).parent / path if spec and spec.origin else None
    if source is None or not source.is_file():
        raise PluginError(f"the docs serve {path} from the Python package {package}, which lacks it: "
                          f"reinstall it (`pip install --force-reinstall {package}`, or `make setup`)")
    return source


def unpacked(package: NpmPackage, cache: Path) -> Path:
    """The package's served files, unpacked once into the cache from its verified tarball."""
    folder = cache / package.spec.replace("/", "+")
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        tarball = npm_pack(package, Path(scratch))
        staged = Path(scratch) / "files"
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                inside = member.name.removeprefix("package/")
                if member.isfile() and any(fnmatch(inside, glob) for glob in package.files):
                    target = staged / inside
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.extractfile(member).read())
        if not staged.is_dir():
            raise PluginError(f"{package.spec} holds none of {package.files}")
        try:
            staged.rename(folder)  # atomic: a build that stopped half-way leaves no half folder
        except OSError:
            if not folder.is_dir():  # else another build unpacked it meanwhile
                raise
    return folder


def npm_pack(package: NpmPackage, into: Path) -> Path:
    """Download the package's tarball (no dependencies: the served files are self-contained bundles)."""
    npm = shutil.which("npm")
    if npm is None:
        raise PluginError(f"the docs serve {package.spec} from the site and fetch it with npm: install Node.js and "
                          f"npm (Debian/Ubuntu: `sudo apt-get install npm`; `make docs` does it as root)")
    completed = subprocess.run([npm, "pack", package.spec, "--json", "--pack-destination", str(into)],
                               check=False, capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise PluginError(f"`npm pack {package.spec}` failed (is the npm registry reachable?):\n{completed.stderr[-2000:]}")
    tarball = into / json.loads(completed.stdout)[0]["filename"]
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != package.integrity:
        raise PluginError(f"{package.spec} from the registry is {digest}, not the pinned {package.integrity}")
    return tarball


def plotly_cdn_url() -> str:
    from plotly.io._utils import plotly_cdn_url as cdn_url

    return cdn_url()


@functools.cache
def remote_urls() -> dict[str, str]:
    """{URL the pages are written with: the site's copy}."""
    from nbconvert.exporters.html import HTMLExporter

    widgets = (f"{HTMLExporter.jupyter_widgets_base_url.default_value}@jupyter-widgets/html-manager@"
               f"{HTMLExporter.html_manager_semver_range.default_value}/dist/embed-amd.js")
    plotly = plotly_cdn_url()
    return {
        plotly: f"{VENDOR}/plotly/{Path(plotly).name}",
        plotly.removesuffix(".js"): f"{VENDOR}/plotly/{Path(plotly).name}",  # the module import of its renderer's setup
        HTMLExporter.require_js_url.default_value: f"{VENDOR}/requirejs/require.js",
        widgets: f"{VENDOR}/html-manager/dist/embed-amd.js",
        HIGHLIGHT_CDN: f"{VENDOR}/highlight.js/",
    }


def served(path: str) -> bool:
    # require.js paths name a module without its ".js", or a folder
    return path in SERVED or f"{path}.js" in SERVED or any(asset.startswith(f"{path}/") for asset in SERVED)


def site_path(ref: str, page_url: str) -> str:
    """The site path a page-relative reference points at."""
    return posixpath.normpath(posixpath.join(posixpath.dirname("/" + page_url), ref.split("?")[0])).lstrip("/")


def require_paths() -> dict[str, str]:
    """{AMD module name: its site path, less ".js"}."""
    paths = {module: f"{VENDOR}/{module}/index" for module in WIDGET_MODULES}
    # The manager's own modules are defined inside embed-amd.js; their paths only tell its bundler
    # where the bundle is, so that the icon fonts are fetched from its folder and not the page's.
    paths["@jupyter-widgets"] = paths["@jupyter-widgets/html-manager/dist"] = f"{VENDOR}/html-manager/dist"
    return paths


def localize(html: str, page_url: str) -> str:
    """The page with its CDN URLs pointed at the site's copies, relative to the page (so the site
    works from any folder of any server)."""
    def here(path: str) -> str:
        return get_relative_url(path, page_url)

    urls = remote_urls()
    # Longest first: the plotly.js URL without ".js" is a prefix of the one with it.
    pattern = re.compile("|".join(re.escape(url) for url in sorted(urls, key=len, reverse=True)))
    html = pattern.sub(lambda match: here(urls[match.group()]), html)
    html = PLOTLY_MATHJAX.sub("", html)
    # require.js reads a global `require` defined before it as its configuration: the manager asks
    # require.js for every widget module it does not hold, and finds the site's copies here (else
    # it falls back to a CDN).
    require_js = f'<script src="{here(f"{VENDOR}/requirejs/require.js")}"></script>'
    paths = {module: here(path) for module, path in require_paths().items()}
    return html.replace(require_js, f"<script>var require = {json.dumps({'paths': paths})};</script>{require_js}", 1)


def check_offline(html: str, page) -> None:
    """Fail the build where a page would still need the network, or a copy the site lacks."""
    name = page.file.src_uri
    remote = {url for match in REMOTE_LOAD.finditer(html) for url in match.groups() if url}
    if remote:
        raise PluginError(f"{name} loads {sorted(remote)} from the network: serve it from the site (docs/hooks.py)")
    missing = {ref for ref in VENDOR_REF.findall(html) if not served(site_path(ref, page.url))}
    if missing:
        raise PluginError(f"{name} loads {sorted(missing)}, which the site does not serve: add it to the "
                          f"files taken from its package in docs/hooks.py")
    for match in WIDGET_STATE.finditer(html):
        state = json.loads(match.group(1))
        if state.get("version_major") != 2:
            raise PluginError(f"{name}: widget state version {state.get('version_major')}, but the site's "
                              f"html-manager 1.x renders version 2 (ipywidgets 8)")
        modules = {model["model_module"] for model in state["state"].values()}
        unserved = modules - BUILT_IN_WIDGET_MODULES - set(WIDGET_MODULES)
        if unserved:
            raise PluginError(f"{name} shows widgets from {sorted(unserved)}, whose front end the site does not "
                              f"serve: add its AMD module to WIDGET_MODULES in docs/hooks.py")
