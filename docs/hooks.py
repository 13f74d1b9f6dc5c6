"""MkDocs hooks of the documentation site (mkdocs.yml: ``hooks``); not a page (``exclude_docs``).

- The READMEs included into the guides fold long tables into ``<details><summary>...</summary> ...
  </details>``, which GitHub renders as Markdown. Python-Markdown leaves the inside of a raw HTML block as
  it is, so the tables would show as pipes: with the ``md_in_html`` extension, ``markdown="1"`` asks it to
  parse them.
- advmed's docstrings cross-reference in reST (``:class:`~advmed.attacks.AttackTrace```), which the
  Markdown of mkdocstrings shows as ``:class:AttackTrace``: the role is dropped and the name kept as code
  (``~`` keeps its last part, as Sphinx does).

The READMEs and the docstrings stay untouched; only what MkDocs renders changes.
"""

from __future__ import annotations

import re

_DETAILS = re.compile(r"<details(?![^>]*\bmarkdown=)([^>]*)>")
_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|data|obj|exc|const|ref):<code>(~?)\.?([^<]*)</code>")


def on_page_markdown(markdown: str, **kwargs) -> str:
    return _DETAILS.sub(r'<details markdown="1"\1>', markdown)


def _name(match: re.Match) -> str:
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_name, html)
