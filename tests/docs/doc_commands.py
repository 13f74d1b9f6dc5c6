"""The commands the documentation site shows, read from its pages as the site renders them.

A page of ``docs/`` may pull in a README, whole or a section of it, with mkdocs-include-markdown-plugin's
``{% include-markdown "<path>" start="<text>" end="<text>" %}``; :func:`page_markdown` resolves those
directives the way the plugin does (the text between the first ``start`` and the next ``end``, both left
out), without MkDocs, so that the command checks run wherever the tests do. tests/docs/test_docs.py checks
that it finds the same commands in the pages the real build renders.

:func:`commands` finds every command in a page: each line of its ```bash / ```sh / ``` blocks (a trailing
backslash continues a line; ``#`` starts a comment) and every inline code span that starts with
``python -m advmed.``. Shell variables assigned in a block (``out=...; common="..."``,
``evaluate="python -m ..."``, ``export X=...``) are expanded in the lines after them, so the loops of a
README block give their real commands.

A comment line ``# full scale only: <why>`` in a shell block marks the commands below it, to the next blank
line or the end of the block, as needing more than a CPU and the procedural data (real data, GPUs, a SLURM
cluster, an account, hours): :attr:`Command.full_scale` holds the reason. tests/docs/test_doc_commands_run.py
runs every other command at smoke size, or names the test that does.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
CONFIG_DIR = REPO / "conf"

_INCLUDE = re.compile(r"\{%\s*include-markdown\s+(.*?)\s*%\}", re.S)
_ARGUMENT = re.compile(r'([\w-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))|"((?:[^"\\]|\\.)*)"')
_FENCE = re.compile(r"^([ \t]*)(```+|~~~+)[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1\2[ \t]*$", re.S | re.M)
_INLINE = re.compile(r"`((?:\.venv/bin/)?python3? -m advmed\.[^`\n]+)`")
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}

# `<run dir>`, `<unet>`, `<weights-inception-...pth>`: what the reader fills in. Never a redirection: it
# starts right after `<` and holds no other angle bracket.
_PLACEHOLDER = re.compile(r"<(?=[^\s<>=])[^<>\n]*(?<=[^\s<>])>")
PLACEHOLDER = "PLACEHOLDER"
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
_SEPARATORS = {";", "&&", "||", "|", "&"}
# `[attack.fields=d|v]`: an optional argument of a usage line, with alternatives; read as its first one.
_OPTIONAL = re.compile(r"(?<!\S)\[([^\s\[\]=]+=[^\s\[\]|]*)(?:\|[^\s\[\]]*)?\](?!\S)")
# The mark of commands that need full scale; the reason after the colon is what the reader is told.
_FULL_SCALE = re.compile(r"^\s*#\s*full scale only\b:?\s*(.*?)\s*$", re.I)


@dataclass(frozen=True)
class Command:
    page: str  # the docs page, relative to docs/
    text: str  # the command as the page shows it, continuations joined
    argv: tuple[str, ...]  # its words, placeholders replaced by PLACEHOLDER, shell variables expanded
    inline: bool = False  # an inline code span of prose (which may show part of a command), not a shell block
    full_scale: str | None = None  # the reason of its `# full scale only: <why>` mark; None: not marked

    @property
    def advmed_module(self) -> str | None:
        """``advmed.<entry>`` for ``python -m advmed.<entry> ...``, else None."""
        i = self.python_index
        return self.argv[i + 2] if i is not None else None

    @property
    def python_index(self) -> int | None:
        for i, word in enumerate(self.argv[:-2]):
            if re.fullmatch(r"(\S*/)?python3?(\.\d+)?", word) and self.argv[i + 1] == "-m" \
                    and self.argv[i + 2].startswith("advmed"):
                return i
        return None

    @property
    def arguments(self) -> list[str]:
        """The words after ``python -m advmed.<entry>``."""
        i = self.python_index
        return list(self.argv[i + 3:]) if i is not None else []


def pages() -> list[Path]:
    """Every Markdown page of the site except the generated API reference."""
    return sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] != "reference")


def _include_arguments(text: str) -> tuple[str, dict[str, str]]:
    path, options = None, {}
    for m in _ARGUMENT.finditer(text):
        if m.group(4) is not None:
            path = m.group(4)
        else:
            value = m.group(2) if m.group(2) is not None else m.group(3)
            options[m.group(1)] = value.encode().decode("unicode_escape") if m.group(2) is not None else value
    if path is None:
        raise ValueError(f"include-markdown directive without a file: {text!r}")
    return path, options


def page_markdown(page: Path) -> str:
    """The page's Markdown with its include-markdown directives replaced by what they include."""
    def include(match: re.Match) -> str:
        path, options = _include_arguments(match.group(1))
        text = (page.parent / path).resolve().read_text(encoding="utf-8")
        start, end = options.get("start"), options.get("end")
        if start is not None:
            at = text.find(start)
            if at < 0:
                raise ValueError(f"{page}: start {start!r} is not in {path}")
            text = text[at + len(start):]
        if end is not None:
            at = text.find(end)
            if at < 0:
                raise ValueError(f"{page}: end {end!r} is not in {path} after its start")
            text = text[:at]
        return text

    return _INCLUDE.sub(include, page.read_text(encoding="utf-8"))


def _expand(line: str, variables: dict[str, str]) -> str:
    for _ in range(5):  # a variable's value may hold others: evaluate="... $out ..."
        expanded = _VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), line)
        if expanded == line:
            break
        line = expanded
    return line


def _split(line: str) -> list[list[str]]:
    """A shell line's simple commands, as word lists (``;``, ``&&``, ``|`` separate them)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, words = [], []
    for word in lexer:
        if word in _SEPARATORS:
            commands.append(words)
            words = []
        else:
            words.append(word)
    commands.append(words)
    return [c for c in commands if c]


def _shell_commands(page: str, block: str) -> list[Command]:
    found, variables, full_scale = [], {}, None
    for line in block.replace("\\\n", " ").splitlines():
        shown = re.sub(r"\s+", " ", line).strip()
        if not shown:
            full_scale = None  # a mark holds to the next blank line
            continue
        mark = _FULL_SCALE.match(line)
        if mark:
            full_scale = mark.group(1)
            continue
        line = _OPTIONAL.sub(r"\1", _PLACEHOLDER.sub(PLACEHOLDER, _expand(line, variables)))
        try:
            simple_commands = _split(line)
        except ValueError:  # an unbalanced quote: not a shell line (a layout, an output)
            continue
        for words in simple_commands:
            if words[0] == "export":
                words = words[1:]
            if not words:
                continue
            if all(_ASSIGNMENT.match(w) for w in words):
                for w in words:
                    name, value = w.split("=", 1)
                    variables[name] = value
                continue
            found.append(Command(page, shown, tuple(words), full_scale=full_scale))
    return found


def commands(page: Path) -> list[Command]:
    """Every command the page shows: shell blocks line by line, and inline ``python -m advmed.`` spans."""
    return commands_in(page.relative_to(DOCS).as_posix(), page_markdown(page))


def commands_in(name: str, text: str) -> list[Command]:
    """Every command of a page's Markdown, includes resolved."""
    found = []
    for m in _FENCE.finditer(text):
        if m.group(3).lower() in SHELL_LANGUAGES:
            found += _shell_commands(name, m.group(4))
    prose = _FENCE.sub("", text)
    for m in _INLINE.finditer(prose):
        words = _split(_PLACEHOLDER.sub(PLACEHOLDER, m.group(1).replace("\\|", "|")))
        if words:
            found.append(Command(name, m.group(1), tuple(words[0]), inline=True))
    return found


def all_commands() -> list[Command]:
    return [c for page in pages() for c in commands(page)]


# The Hydra overrides of a command, as the compose check (test_doc_commands.py) and the smoke runs
# (test_doc_commands_run.py) read them.
_SHELL_VARIABLE = re.compile(r"\$(\{\w+\}|\w+)")


def is_placeholder(value: str) -> bool:
    return PLACEHOLDER in value or value == "..." or "/..." in value


def is_group(key: str) -> bool:
    """``attack``, ``attack@train_attack``, ``hydra/launcher``, ``experiment``: a config group."""
    group = key.lstrip("+~").split("@")[0]
    return (CONFIG_DIR / group).is_dir() or (group.startswith("hydra/") and group != "hydra/")


@cache
def hydra_config(module: str) -> str | None:
    """The config name of a Hydra entry point (``@hydra.main(config_name=...)`` in ``advmed/<entry>.py`` or a
    package's ``__main__.py``), read from the source; None for a module that is no Hydra application."""
    base = REPO / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__main__.py"):
        if path.is_file():
            match = re.search(r"@hydra\.main\([^)]*config_name=[\"']([\w/]+)[\"']", path.read_text(encoding="utf-8"))
            if match:
                return match.group(1)
    return None


@cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def override_sets(arguments: list[str]) -> list[list[str]]:
    """The override lists to compose for a command's words, by the rules of tests/docs/test_doc_commands.py's
    docstring: placeholders, sweeps (one list per value of a swept config group), Hydra's options."""
    base, variants = [], []
    for word in arguments:
        if word.startswith("-") or is_placeholder(word) and "=" not in word or _SHELL_VARIABLE.fullmatch(word):
            continue  # -m, --multirun, --cfg; a lone placeholder or an unset shell variable
        if "=" not in word:
            if word.startswith("~"):
                base.append(word)
            continue
        key, value = word.split("=", 1)
        if is_placeholder(value):
            if is_group(key):
                continue
            word = f"{key}={value.replace(PLACEHOLDER, 'placeholder')}"
        override = _parser().parse_override(word)
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            element = override.get_key_element()
            base.append(f"{element}={values[0]}")
            if is_group(key):
                variants += [(len(base) - 1, f"{element}={v}") for v in values[1:]]
        else:
            base.append(word)
    sets = [base]
    for index, replacement in variants:
        sets.append([replacement if i == index else o for i, o in enumerate(base)])
    return sets
