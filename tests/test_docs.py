"""The docs against the code: the generated reference holds every recipe field and every CLI
option, the committed pages equal what the code generates, and every `driver` command a page
tells the reader to type parses with today's argument parser (the how-tos themselves run in
`make docs-howtos`)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _module("generate")
howtos = _module("howtos")


def test_the_committed_reference_pages_are_what_the_code_generates():
    stale = [str(path.relative_to(ROOT)) for path, build in generate.PAGES.items()
             if not path.exists() or path.read_text() != build()]
    assert not stale, f"run `python docs/generate.py`: {stale}"


def test_every_recipe_field_of_every_section_is_in_the_recipe_reference():
    from driver.recipe import Recipe

    schema = Recipe.model_json_schema()
    text = generate.recipe_reference()
    for name, section in [("Recipe", schema), *schema["$defs"].items()]:
        for field in section.get("properties", {}):
            assert f"| `{field}` |" in text, f"{name}.{field} missing"
        if name != "Recipe" and "properties" in section:
            assert f"## {name}\n" in text


def test_bounds_enforced_by_the_validator_are_stated_in_the_reference():
    text = generate.recipe_reference()
    timestep = next(line for line in text.splitlines() if line.startswith("| `timestep_fs` |"))
    assert "> 0, ≤ 10 fs" in timestep and "warns outside ≤ 5" in timestep
    scale = next(line for line in text.splitlines() if line.startswith("| `scale` |"))
    assert "> 0, ≤ 5" in scale


def test_every_command_and_option_is_in_the_cli_reference():
    from driver.cli import build_parser

    text = generate.cli_reference()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        assert f"## driver {name}\n" in text
        for action in command._actions:
            for option in action.option_strings if action.dest != "help" else ():
                assert f"`{option}`" in text, f"driver {name} {option} missing"


def test_every_task_kind_has_its_results_with_units_in_the_output_reference():
    from driver.tasks import tasks

    text = generate.output_reference()
    for kind, task in tasks().items():
        assert f"### {kind}\n" in text
        for field, unit in task.result.units().items():
            assert f"| `{field}` |" in text and f"`{unit}`" in text


def _driver_commands(page: Path) -> list[list[str]]:
    commands = []
    for line in howtos.commands(page).splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        if "driver" in words:  # up to the first shell operator (||, &&, ;, |)
            rest = words[words.index("driver") + 1:]
            stop = next((i for i, w in enumerate(rest) if w in ("||", "&&", ";", "|")), len(rest))
            commands.append(rest[:stop])
    return commands


HOWTO_PAGES = sorted((DOCS / "how-to").glob("*.md"))


@pytest.mark.parametrize("page", HOWTO_PAGES, ids=[p.stem for p in HOWTO_PAGES])
def test_each_how_to_commands_parse_with_todays_command_line(page):
    """A renamed option or command fails here, before the 20-minute `make docs-howtos`."""
    from driver.cli import build_parser

    assert page.read_text().count("```bash") >= 1, f"{page.name}: no command a reader can run"
    for words in _driver_commands(page):
        try:
            build_parser().parse_args(words)
        except SystemExit as exc:
            pytest.fail(f"{page.name}: `driver {' '.join(words)}` does not parse (exit {exc.code})")


def test_each_figure_a_page_shows_is_made_by_a_how_to():
    shown = {m for page in DOCS.rglob("*.md") for m in re.findall(r"\(\.\./figures/([\w-]+)\.png\)", page.read_text())}
    assert shown == set(howtos.FIGURE_SOURCES)
    for figure in shown:
        assert (DOCS / "figures" / f"{figure}.png").exists(), f"docs/figures/{figure}.png: run make docs-figures"
