"""The documentation site (``make docs``) builds with every warning an error, and its API reference documents
every attack, every LightningModule and every public module of the packages it covers.

Needs the ``docs`` extra (``make docs`` installs it; ``pip install -e ".[docs]"``); skipped without it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import pkgutil
import re
from html import unescape
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.docs.doc_commands import DOCS, commands, commands_in, pages

pytestmark = pytest.mark.e2e  # a build of the whole site: `make test` runs it, `make test-fast` does not

for _module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_include_markdown_plugin"):
    pytest.importorskip(_module, reason="the docs extra is not installed: make docs, or pip install -e '.[docs]'")

from mkdocs.commands.build import build  # noqa: E402
from mkdocs.config import load_config  # noqa: E402
from mkdocs.exceptions import Abort  # noqa: E402
from mkdocs.plugins import BasePlugin, event_priority  # noqa: E402

REFERENCE = {  # API reference page -> the package it documents
    "attacks": "advmed.attacks",
    "models": "advmed.models",
    "data": "advmed.data",
    "metrics": "advmed.metrics",
    "corruptions": "advmed.corruptions",
}


class _Capture(BasePlugin):
    """Keeps each page's Markdown as MkDocs renders it: after the includes and the hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.markdown: dict[str, str] = {}

    @event_priority(-100)
    def on_page_markdown(self, markdown, page, **kwargs):
        self.markdown[page.file.src_uri] = markdown
        return markdown


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built as `make docs` builds it (strict), into a temporary folder, with each page's Markdown."""
    site_dir = tmp_path_factory.mktemp("site")
    capture, warnings = _Capture(), _Warnings()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_MKDOCS_2_WARNING", "1")  # Material's banner about MkDocs 2 (mkdocs.yml pins MkDocs 1)
        config = load_config(str(REPO_ROOT / "mkdocs.yml"), strict=True, site_dir=str(site_dir))
        config.plugins["advmed-tests-capture"] = capture
        logging.getLogger("mkdocs").addHandler(warnings)
        try:
            build(config)
        except Abort as error:
            pytest.fail(f"mkdocs build --strict failed: {error}\n" + "\n".join(warnings.messages))
        finally:
            logging.getLogger("mkdocs").removeHandler(warnings)
    return site_dir, capture.markdown


def _page(site_dir: Path, name: str) -> str:
    return (site_dir / "reference" / name / "index.html").read_text(encoding="utf-8")


def _letters(text: str) -> str:
    return re.sub(r"\W", "", text)


def _text(html: str) -> str:
    """What a reader sees of a page, letters and digits only (tags dropped, entities decoded)."""
    return _letters(unescape(re.sub(r"<[^>]+>", "", html)))


def _opening_words(docstring: str, count: int = 5) -> str:
    """The first words of a docstring, reST roles dropped as docs/hooks.py drops them."""
    line = re.sub(r":\w+:`(~?)\.?([^`]+)`", lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2),
                  docstring)
    return " ".join(line.split()[:count])


def test_the_site_builds_strict(site):
    site_dir, markdown = site
    assert (site_dir / "index.html").is_file()
    built = {p.relative_to(DOCS).as_posix() for p in pages()}
    assert built <= set(markdown), f"pages not built: {sorted(built - set(markdown))}"


def test_the_api_reference_lists_every_attack(site):
    import advmed.attacks

    html = _page(site[0], "attacks")
    text = _text(html)
    missing = [name for name in advmed.attacks.__all__ if f'id="advmed.attacks.{name}"' not in html
               or _letters(_opening_words(inspect.getdoc(getattr(advmed.attacks, name)))) not in text]
    assert not missing, f"attacks of advmed.attacks.__all__ missing from reference/attacks.md: {missing}"


def test_the_api_reference_lists_every_lightning_module(site):
    from lightning.pytorch import LightningModule

    import advmed.models

    html = _page(site[0], "models")
    modules = []
    for info in pkgutil.iter_modules(advmed.models.__path__):
        module = importlib.import_module(f"advmed.models.{info.name}")
        modules += [f"{module.__name__}.{name}" for name, obj in vars(module).items()
                    if inspect.isclass(obj) and issubclass(obj, LightningModule) and obj.__module__ == module.__name__]
    assert len(modules) >= 8  # classifier, segmentation, GAN base, StyleGAN2, SRGAN, AdvGAN, deformation, patch
    missing = [name for name in modules if f'id="{name}"' not in html]
    assert not missing, f"LightningModules missing from reference/models.md: {missing}"


@pytest.mark.parametrize("page", sorted(REFERENCE))
def test_the_api_reference_documents_every_public_module(site, page):
    """Every module of the package is on its page, with its docstring (read from the source, not imported)."""
    package = REFERENCE[page]
    html = _page(site[0], page)
    text = _text(html)
    root = REPO_ROOT / Path(*package.split("."))
    missing = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if f'id="{name}"' not in html:
            missing.append(f"{name} (no section)")
        elif docstring and _letters(_opening_words(docstring)) not in text:
            missing.append(f"{name} (its docstring: {_opening_words(docstring)!r})")
    assert not missing, f"modules missing from reference/{page}.md: {missing}"


def test_the_command_checks_read_the_pages_as_they_are_built(site):
    """tests/docs/doc_commands.py resolves the include-markdown directives itself, so that the command checks
    (test_doc_commands.py) run without MkDocs: it must find exactly the commands of the pages MkDocs built."""
    _, markdown = site
    for page in pages():
        name = page.relative_to(DOCS).as_posix()
        assert [c.argv for c in commands(page)] == [c.argv for c in commands_in(name, markdown[name])], name
