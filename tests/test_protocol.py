"""The method interface (cdrl.core.protocol.Method): every registered method satisfies it,
signatures included; nothing outside a method's own module uses its private members; one
Langevin loop serves every method, and inpainting is that sampler plus a callback."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from cdrl.core.config import config_from_dict
from cdrl.core.protocol import Method
from cdrl.train.registry import METHODS, build_method
from tests.conftest import TINY_DIGITS, merge

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("cdrl", "baselines", "scripts", "workflow", "tests")
           for p in (ROOT / d).rglob("*.py")]

# Per method: what turns the tiny digits CDRL config into it.
OVERRIDES = {
    "cdrl": {},
    "drl": {"method": "drl", "initializer": {"arch": "none"}, "schedule": {"kind": "drl"},
            "ebm": {"time_input": "index"}, "train": {"variance_reduction": False}},
    "short_run": {"method": "short_run", "initializer": {"arch": "none"}},
    "coopnets": {"method": "coopnets", "initializer": {"arch": "none"}},
    "replay_buffer": {"method": "replay_buffer", "initializer": {"arch": "none"},
                      "baseline": {"buffer_size": 16}},
}


def _method(name: str):
    cfg = config_from_dict(merge(TINY_DIGITS, OVERRIDES[name]))
    torch.manual_seed(0)
    return build_method(cfg, (1, 16, 16), torch.device("cpu"))


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()
            if p.name != "self"]


def test_every_registered_method_is_covered():
    assert set(OVERRIDES) == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_satisfies_the_protocol_with_its_signatures(name):
    method = _method(name)
    assert isinstance(method, Method)
    for attr in ("T", "num_classes", "data_shape", "t_level", "sqrt_ab", "sigma_bar", "coef"):
        assert getattr(method, attr) is not None, attr
    for fn in ("modules", "per_sample", "level_condition", "grad_fn", "energy", "train_step",
               "sample", "state_dict", "load_state_dict"):
        # Same parameter names, order and defaults as the protocol: callers can rely on them.
        assert _params(getattr(type(method), fn)) == _params(getattr(Method, fn)), (name, fn)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_protocol_calls_work_on_every_method(name):
    method = _method(name)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    k = torch.zeros(4, dtype=torch.long)
    f = method.energy(x, k)
    assert f.shape == (4,) and torch.isfinite(f).all()
    # energy() is the EBM on sqrt(m) x at the level's condition.
    ebm = method.ebm_ema.model
    assert torch.allclose(f, ebm.energy(method.per_sample("sqrt_m", k) * x,
                                        method.level_condition(ebm, k)))
    assert method.grad_fn(ebm, k)(x).shape == x.shape
    stats = method.train_step(x, None)
    assert "loss_ebm" in stats and stats["k"].shape == (4,)
    seen = []

    def callback(step, y):
        seen.append(step)
        return y

    out, levels = method.sample(4, steps=2, generator=torch.Generator().manual_seed(0),
                                return_levels=True, callback=callback)
    assert out.shape == x.shape and len(levels) == method.T + 1
    # After each level's start and each of its 2 Langevin steps, top level first.
    assert seen == [s for s in reversed(range(method.T)) for _ in range(3)]


@pytest.mark.parametrize("name", ["short_run", "coopnets", "replay_buffer"])
def test_single_ebms_refuse_labels_and_guides(name):
    from cdrl.core.guidance import Guide

    method = _method(name)
    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match="labels: the single-EBM baselines are unconditional"):
        method.train_step(x, torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="guide: the single-EBM baselines are unconditional"):
        method.sample(2, guide=Guide.single(torch.zeros(2, dtype=torch.long)))


def test_a_callback_that_does_nothing_leaves_the_samples_bit_for_bit():
    method = _method("cdrl")
    runs = [method.sample(3, generator=torch.Generator().manual_seed(5), callback=cb)
            for cb in (None, lambda step, y: y)]
    assert torch.equal(*runs)


def test_inpainting_keeps_known_pixels_and_is_the_sampler_plus_a_projection():
    from cdrl.tasks.inpaint import inpaint, make_mask

    method = _method("cdrl")
    x_obs = torch.rand(3, 1, 16, 16) * 2 - 1
    mask = make_mask("left", (1, 16, 16), 0, range(3))
    filled = inpaint(method, x_obs, mask, steps=2, generator=torch.Generator().manual_seed(1))
    known = mask.expand_as(x_obs).bool()
    assert torch.equal(filled[known], x_obs[known])
    assert not torch.equal(filled[~known], x_obs[~known])  # the unknown pixels were sampled


# ----------------------------------------------------------------------------- static checks
def _private_members() -> set[str]:
    """Private (single-underscore) attributes and methods the method classes define."""
    names = set()
    for cls in METHODS.values():
        for klass in cls.__mro__:
            if klass.__module__.startswith(("cdrl", "baselines")):
                names |= {n for n in vars(klass) if n.startswith("_") and not n.startswith("__")}
    method = _method("cdrl")
    names |= {n for n in vars(method) if n.startswith("_") and not n.startswith("__")}
    return names


def private_uses(tree: ast.AST, private: set[str], imports: bool = True
                 ) -> list[tuple[int, str]]:
    """``obj._name`` where ``_name`` is a method's private member and ``obj`` is not ``self``,
    ``cls`` or ``super()``; and (``imports``) ``from cdrl... import _name``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            base = node.value
            own = (isinstance(base, ast.Name) and base.id in ("self", "cls")) or (
                isinstance(base, ast.Call) and getattr(base.func, "id", "") == "super")
            if not own:
                out.append((node.lineno, node.attr))
        if imports and isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                ("cdrl", "baselines")):
            out += [(node.lineno, a.name) for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return sorted(out)


def test_the_private_use_checker_can_fail():
    bad = ast.parse("def f(method):\n    return method._per_sample('x', 0)\n"
                    "from cdrl.train.trainer import _hidden\n")
    assert private_uses(bad, {"_per_sample"}) == [(2, "_per_sample"), (3, "_hidden")]
    assert private_uses(ast.parse("self._per_sample('x', 0)"), {"_per_sample"}) == []


def test_no_module_uses_a_method_s_private_members():
    private = _private_members()
    assert "_gather" in private and "_chain_start" in private  # the scan sees the classes
    # Tests may import a module's private helpers to test them; never a method's members.
    found = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in SOURCES
             for line, name in private_uses(ast.parse(p.read_text()), private,
                                            imports=p.parent.name != "tests")]
    assert not found, found


def langevin_loops(tree: ast.AST) -> list[int]:
    """Lines of ``for`` loops whose body both takes an energy gradient or drift (a call whose
    name contains 'grad' or 'drift') and draws noise (a call whose name contains 'randn' or
    'normal')."""
    def called(node) -> set[str]:
        names = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                fn = sub.func
                names.add(fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", ""))
        return names

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.For):
            names = called(ast.Module(body=node.body, type_ignores=[]))
            if any("grad" in n or "drift" in n for n in names) and any("randn" in n or "normal" in n
                                                       for n in names):
                lines.append(node.lineno)
    return lines


def test_one_langevin_loop_serves_every_method():
    loop = "for _ in range(3):\n    x = x + grad_fn(x) + randn(x.shape)\n"
    assert langevin_loops(ast.parse(loop)) == [1]
    package = [p for d in ("cdrl", "baselines") for p in (ROOT / d).rglob("*.py")]
    found = {str(p.relative_to(ROOT)): langevin_loops(ast.parse(p.read_text()))
             for p in package}
    assert {k: v for k, v in found.items() if v} == {"cdrl/core/sampler.py": [
        next(i for i, line in enumerate((ROOT / "cdrl/core/sampler.py").read_text()
                                        .splitlines(), 1) if "for _ in range(n_steps)" in line)]}
