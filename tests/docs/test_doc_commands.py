"""Every command the documentation site shows names something that exists, and every Hydra command's
overrides compose into the config its entry point would run.

The commands are read from the pages with the READMEs they include (tests/docs/doc_commands.py):

- ``python -m advmed.<module> ...`` of a Hydra application (``advmed.train``, ``evaluate``, ``study``,
  ``augment``, ``generate``, ``advmed.data.download``: the ``config_name`` of its ``@hydra.main``): the
  overrides are composed with ``hydra.compose(<config name>, overrides, return_hydra_config=True)``
  (so ``hydra/launcher=slurm`` and ``hydra.*`` keys are checked too) and the job config is resolved, as the
  entry point would; a required value left out (``???``) fails for a command of a shell block, not for an
  inline span of prose, which may show part of a command.
- ``python -m advmed.<module> ...`` otherwise (``advmed.collect``, ``advmed.studies...``): the module exists.
  Words before the overrides (``advmed.data.download nct_crc_he root=...``: the source) are not checked.
- ``make <target> ...``: the Makefile has the target. ``python <file>.py ...``: the file exists.

What the reader fills in is not checked, by these rules:

- a placeholder (``<run dir>``, ``<unet>``, ``...``) in the value of a config key is replaced by a string;
  in the value of a config group (``experiment=robust_training/<method>``) the override is left out, as
  are words that are only a placeholder or only a shell variable the block does not set (``$ARGS``);
- a sweep (``attack.eps=0.02,0.05``) is composed at its first value, and a sweep over a config group
  (``method=...``, ``attack=fgsm,pgd``) at each of its values;
- ``-m`` / ``--multirun`` and other options of Hydra's command line are left out;
- an optional argument of a usage line (``[attack.fields=d|v]``) is read as its first alternative.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from advmed.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR, REPO_ROOT
from tests.docs.doc_commands import PLACEHOLDER, Command, all_commands, hydra_config, override_sets

register_resolvers()

COMMANDS = all_commands()


@cache  # the guides repeat commands; composing is most of this test's time
def _compose(entry: str, overrides: tuple[str, ...], throw_on_missing: bool) -> None:
    cfg = compose(entry, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]  # checked by composing it; its values are Hydra's at run time
        cfg.paths.output_dir = "/tmp/run"  # what Hydra sets at run time
        if "logger" in cfg and cfg.logger and "wandb" in cfg.logger:
            cfg.logger.wandb.name = "job"
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=throw_on_missing)


def _check(command: Command) -> str | None:
    """None when the command is fine, else what is wrong with it."""
    argv = command.argv
    module = command.advmed_module
    if module is not None:
        if PLACEHOLDER in module:
            return None  # `python -m advmed.<entry>`: any entry
        entry = hydra_config(module)
        if entry is None:
            return None if importlib.util.find_spec(module) else f"no module {module}"
        for overrides in override_sets(command.arguments):
            try:
                _compose(entry, tuple(overrides), throw_on_missing=not command.inline)
            except Exception as error:  # noqa: BLE001 -- reported with the command
                return f"{type(error).__name__}: {str(error).splitlines()[0]} (overrides {overrides})"
        return None
    if argv[0] == "make":
        targets = [w for w in argv[1:] if not w.startswith("-") and "=" not in w]
        missing = [t for t in targets if t not in _make_targets()]
        return f"the Makefile has no target {missing}" if missing else None
    if re.fullmatch(r"(\S*/)?python3?", argv[0]) and len(argv) > 1 and argv[1].endswith(".py"):
        return None if (REPO_ROOT / argv[1]).is_file() else f"no file {argv[1]}"
    return None


@cache
def _make_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", text, re.M))


def test_the_guides_show_commands():
    """The extraction finds the commands (an empty list would make the check below vacuous)."""
    entries = {c.advmed_module for c in COMMANDS}
    assert {"advmed.train", "advmed.evaluate", "advmed.study", "advmed.augment", "advmed.generate",
            "advmed.collect"} <= entries
    assert len([c for c in COMMANDS if c.advmed_module]) > 100


def test_every_command_of_the_guides_composes():
    GlobalHydra.instance().clear()
    problems = []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for command in COMMANDS:
            problem = _check(command)
            if problem:
                problems.append(f"{command.page}: {command.text}\n    -> {problem}")
    GlobalHydra.instance().clear()
    assert not problems, "commands of the documentation that do not run as shown:\n" + "\n".join(problems)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONFIG_DIR / "attack").glob("*.yaml")))
def test_the_robustness_guide_lists_every_attack(option):
    guide = (REPO_ROOT / "docs" / "guides" / "robustness.md").read_text()
    assert f"| `{option}` |" in guide, f"conf/attack/{option}.yaml is missing from the guide's table of attacks"
