"""MkDocs hooks of the documentation site (mkdocs.yml: ``hooks``); not a page (``exclude_docs``).

The READMEs included into the guides fold long tables into ``<details><summary>...</summary> ... </details>``,
which GitHub renders as Markdown. Python-Markdown leaves the inside of a raw HTML block as it is, so the
tables would show as pipes: with the ``md_in_html`` extension, ``markdown="1"`` asks it to parse them.
The READMEs stay untouched; only the page text MkDocs renders changes.
"""

from __future__ import annotations

import re

_DETAILS = re.compile(r"<details(?![^>]*\bmarkdown=)([^>]*)>")


def on_page_markdown(markdown: str, **kwargs) -> str:
    return _DETAILS.sub(r'<details markdown="1"\1>', markdown)
