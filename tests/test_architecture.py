"""The seams hold: the layers import only downwards (no cycles, lazy imports included), every model family declares
what the rest of the code asks it, and the command line's choices are the library's own tables."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from diffusionlab.processes import METHODS
from diffusionlab.processes.registry import all_settings
from diffusionlab.sampling import SAMPLER_NAMES, SamplerOptions, sampler_spec

SRC = Path(__file__).resolve().parents[1] / "src" / "diffusionlab"


def import_graph() -> dict[str, set[str]]:
    """module -> the diffusionlab modules it imports anywhere in its body (function-level imports included)."""
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        package = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for cand in [target] + [f"{target}.{a.name}" for a in node.names]:
                    if cand in mods and cand != m:
                        graph[m].add(cand)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name for a in node.names if a.name in mods)
    return graph


def test_no_import_cycles_even_through_lazy_imports() -> None:
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path[path.index(n):] + [n]) if n in path else n
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


# Lower layers never import these (prefix match on module names).
FORBIDDEN = {
    "diffusionlab.paths": ("diffusionlab.denoiser", "diffusionlab.processes", "diffusionlab.sampling",
                           "diffusionlab.training", "diffusionlab.runs", "diffusionlab.cli", "diffusionlab.models"),
    "diffusionlab.prediction": ("diffusionlab.paths", "diffusionlab.denoiser", "diffusionlab.processes"),
    "diffusionlab.samplers": ("diffusionlab.sampling", "diffusionlab.training", "diffusionlab.runs", "diffusionlab.cli",
                              "diffusionlab.models", "diffusionlab.codecs", "diffusionlab.evaluation"),
    "diffusionlab.processes": ("diffusionlab.sampling", "diffusionlab.training", "diffusionlab.runs", "diffusionlab.cli",
                               "diffusionlab.models", "diffusionlab.codecs", "diffusionlab.evaluation"),
    "diffusionlab.models": ("diffusionlab.processes", "diffusionlab.sampling", "diffusionlab.training",
                            "diffusionlab.runs", "diffusionlab.cli"),
    "diffusionlab.codecs": ("diffusionlab.sampling", "diffusionlab.training", "diffusionlab.runs", "diffusionlab.cli"),
    "diffusionlab.sampling": ("diffusionlab.runs", "diffusionlab.cli", "diffusionlab.evaluation"),
    # training may use the domain feature network (the autoencoder's perceptual term), not the evaluation commands
    "diffusionlab.training": ("diffusionlab.runs", "diffusionlab.cli", "diffusionlab.evaluation.evaluate"),
    "diffusionlab.baselines": ("diffusionlab.runs", "diffusionlab.cli", "diffusionlab.evaluation.evaluate"),
    "diffusionlab.runs": ("diffusionlab.cli", "diffusionlab.serve", "diffusionlab.api"),
    "diffusionlab.api": ("diffusionlab.cli", "diffusionlab.serve"),
    "diffusionlab.serve": ("diffusionlab.cli",),
    # report reads files (no model): it sits under the API; explain draws with the API's runs, under the CLI
    "diffusionlab.pages": ("diffusionlab.api", "diffusionlab.explain", "diffusionlab.serve", "diffusionlab.cli"),
    "diffusionlab.explain": ("diffusionlab.serve", "diffusionlab.cli"),
}


def test_layers_import_only_downwards() -> None:
    for module, imports in import_graph().items():
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                bad = [i for i in imports if i.startswith(banned)]
                assert not bad, f"{module} imports {bad} from a higher layer"


def test_no_family_tests_outside_the_registry() -> None:
    """Nothing outside processes/ asks which family a process is: no hasattr on a process, no method == '...'."""
    for p in SRC.rglob("*.py"):
        if "processes" in p.parts:
            continue
        text = p.read_text()
        patterns = ["hasattr(process", "hasattr(run.process", "getattr(process", "getattr(run.process"]
        patterns += [f'method {op} "{m}"' for m in METHODS for op in ("==", "!=")]
        for pattern in patterns:
            assert pattern not in text, f"{p.relative_to(SRC)} contains {pattern!r}"


@pytest.mark.parametrize("method", list(METHODS))
def test_every_family_declares_its_contract(method: str) -> None:
    """The declared settings are the constructor's keyword arguments with the same defaults; config() round-trips;
    the time convention, output channels and sampling defaults are there for every sampler."""
    cls = METHODS[method]
    params = inspect.signature(cls.__init__).parameters
    declared = {s.name: s.default for s in cls.settings}
    assert declared == {k: v.default for k, v in params.items() if k != "self"}, method
    process = cls()
    assert process.config() == declared and cls(**process.config()).config() == declared
    assert process.method == method and process.time_scale in (1.0, 1000.0)
    assert process.out_channels(3) in (3, 6) and process.variance in ("beta", "beta_tilde", "learned")
    for sampler in SAMPLER_NAMES:
        assert process.default_steps(sampler) >= 1
    assert process.default_sampler in SAMPLER_NAMES
    schedule = process.vp_schedule(7)
    assert schedule.T == 7 and bool((schedule.alpha_bar[1:] < schedule.alpha_bar[:-1]).all())
    t, eps = process.draw((5, 1, 2, 2), torch.Generator().manual_seed(0))
    assert t.shape == (5,) and eps.shape == (5, 1, 2, 2)


def test_cli_choices_are_the_librarys_tables() -> None:
    from diffusionlab.baselines import KINDS
    from diffusionlab.cli import build_parser
    from diffusionlab.training.presets import BASELINE_PRESETS, PRESETS

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001 - argparse keeps no public handle
    actions = {a.dest: a for a in train._actions}  # noqa: SLF001
    assert tuple(actions["method"].choices) == (*METHODS, *KINDS)
    assert tuple(actions["preset"].choices) == (*PRESETS, *BASELINE_PRESETS)
    assert all(BASELINE_PRESETS[name]["kind"] in KINDS for name in BASELINE_PRESETS)
    for name, owners in all_settings().items():
        action = actions[f"process_{owners[0][1].cli_flag.lstrip('-').replace('-', '_')}"]
        if len(owners) == 1 and owners[0][1].choices:
            assert tuple(action.choices) == owners[0][1].choices, name
    sample = parser._subparsers._group_actions[0].choices["sample"]  # noqa: SLF001
    assert tuple({a.dest: a for a in sample._actions}["sampler"].choices) == SAMPLER_NAMES  # noqa: SLF001


def test_sampler_options_refuse_nonsense_in_one_line() -> None:
    from diffusionlab.errors import ConfigError

    for bad in ({"eta": 1.5}, {"snr": float("nan")}, {"rtol": 0.0}, {"sigma_spacing": "cosine"}, {"spacing": "cubic"},
                {"variance": "huge"}, {"langevin_eps": float("inf")}):
        with pytest.raises(ConfigError) as e:
            SamplerOptions(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="corrector-steps"):
        sampler_spec("langevin").check("langevin", SamplerOptions(corrector_steps=0))
    sampler_spec("pc").check("pc", SamplerOptions(corrector_steps=0))  # pc without corrector is the reverse SDE


def test_every_cited_section_of_the_maths_doc_exists() -> None:
    """The code cites docs/maths.md (it travels with the code; a clone has no SPEC.md): every "docs/maths.md section N"
    in the source, the tests and the README names a section that the page has."""
    import re

    root = SRC.parents[1]
    headings = set(re.findall(r"^## (\d+)\. ", (root / "docs" / "maths.md").read_text(), re.M))
    assert headings == {str(i) for i in range(1, 14)}  # SPEC.md's 12 sections, then 13: weight averages (EDM2)
    cited: set[str] = set()
    for path in [*SRC.rglob("*.py"), *(root / "tests").glob("*.py"), root / "README.md"]:
        for m in re.finditer(r"docs/maths\.md sections? ([\d, -]+(?:and \d+)?)", path.read_text()):
            cited.update(re.findall(r"\d+", m.group(1)))
    assert cited and cited <= headings, sorted(cited - headings)
    assert "SPEC.md" not in (root / "README.md").read_text()
