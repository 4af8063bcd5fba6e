"""Speed of CDRL against DRL at the same EBM size (spec 5.2: the "2x speed-up over DRL").

    cdrl bench --cdrl workflow/config/experiments/cdrl_digits.yaml \
               --drl workflow/config/experiments/drl_digits.yaml \
               --batch 32 --rounds 10 --threads 1 --out results/tables/speed_digits.csv

The claim's basis is MCMC steps: K = 15 against 30 Langevin steps per level, T = 6 levels. This
command measures, for each method on the current device:

* per generated image, the EBM gradient evaluations and initializer forwards, *counted* by
  wrapping the networks during real sampling calls and checked against ``T*K (+1 for the Tweedie
  step)`` and ``T`` (a mismatch is an error);
* wall-clock seconds per image of ``method.sample`` at ``--batch`` and seconds per training
  iteration (``method.train_step`` at ``--train-batch``): one warm-up call of each (a full
  iteration; a one-step sampling call), then ``--rounds`` interleaved rounds (default 10, at
  least 2; ``--repeats`` is an alias). Round ``r`` times one sampling call of each method, then
  one training iteration of each, CDRL first in rounds 1, 3, 5, ... and DRL first in rounds 2,
  4, ... (``round_order``), so that neither method always runs in the other's wake and a drift
  in the host's load hits both alike; ``torch.cuda.synchronize`` around each call on a GPU;
* the DRL/CDRL ratio of each count, and of each time from the paired rounds: the geometric mean
  of the per-round ratios with the 95 % t-interval of the mean log ratio (n = rounds, n - 1
  degrees of freedom), exponentiated back (``cdrl.report.claim_stats.paired_ratio``, which the
  claims table's C2 also uses). The per-method times are the median over rounds with the
  min-max spread.

Weights are random unless ``--cdrl-run``/``--drl-run`` name trained run directories; random
weights time the same arithmetic. Their spectral-norm vectors are first brought to convergence
(20 power iterations), as in any trained network: with the construction-time random vectors the
paper-size EBM's activations overflow to inf/NaN, which runs about 20x slower on CPUs and would
time a network nobody samples from. Training data are uniform noise in [-1, 1].

Writes ``--out`` (CSV, one row per quantity: ``COLUMNS`` then ``RATIO_COLUMNS``, the ratio's
interval), every timed call beside it in ``<stem>.rounds.csv`` (``ROUND_COLUMNS``: round 1..n,
method ``cdrl``/``drl``, quantity, seconds per image or per iteration, and the position 1 or 2
of the call in its round) and a Markdown table (``.md``: the methods as rows, the quantities as
columns, with the DRL/CDRL ratio and the paper's claim under them). ``--repeats`` in ``COLUMNS``
holds the number of rounds (the column keeps its old name for older readers).

On a shared host timings are disturbed whatever the interleaving: the workflow's rule runs this
command with nothing else scheduled beside it (workflow/rules/downstream.smk, docs/speed.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cdrl.core.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from cdrl.io import atomic_write_text, csv_text
from cdrl.report.claim_stats import paired_ratio
from cdrl.report.render import fmt, markdown
from cdrl.report.speed_table import RATIO_COLUMNS, speed_view

__all__ = ["add_cli", "BenchResult", "bench_methods", "build_for_bench", "count_sampling_nfe",
           "nfe_formula", "seconds", "seconds_and_peak", "compare", "round_order", "round_rows",
           "rounds_path", "write_tables", "COLUMNS", "RATIO_COLUMNS",
           "ROUND_COLUMNS", "DEFAULT_ROUNDS", "MIN_ROUNDS"]

CLAIMED_SPEEDUP = 2.0
SN_WARMUP_ITERS = 20
COLUMNS = ["quantity", "unit", "cdrl", "drl", "drl_over_cdrl", "claimed", "cdrl_formula",
           "drl_formula", "cdrl_spread", "drl_spread", "device", "threads", "batch", "train_batch",
           "repeats", "weights"]
ROUND_COLUMNS = ["round", "method", "quantity", "seconds", "position"]
DEFAULT_ROUNDS = 10
MIN_ROUNDS = 2   # a t-interval needs two paired ratios
# Timed quantity (CSV row) -> its per-round list in BenchResult.
TIMED = {"sampling time per image": "sample_s_per_image",
         "training time per iteration": "train_s_per_iter"}


# ----------------------------------------------------------------------------- set-up
def data_shape(cfg: Config) -> tuple[int, ...]:
    """The data shape of a config without loading the data (images: from the dataset table)."""
    from cdrl.data.images import IMAGE_DATASETS

    spec = IMAGE_DATASETS.get(cfg.data.name)
    return (spec.channels, spec.size, spec.size) if spec is not None else (2,)


def build_for_bench(config: str | None, run_dir: str | None, overrides: list[str],
                    device: str | None):
    """``(cfg, method, weights)`` from a config (random weights) or a trained run directory."""
    from cdrl.core.nets.layers import power_iteration_
    from cdrl.train.registry import build_method
    from cdrl.train.trainer import load_run, select_device

    if run_dir:
        cfg, method, state = load_run(Path(run_dir), device)
        return cfg, method, f"trained ({run_dir}, iteration {int(state['iteration'])})"
    # --set KEY=VALUE items (YAML values), applied as a preset's set: is (one parser).
    cfg = config_from_dict(apply_overrides(config_to_dict(load_config(config)), overrides or [],
                                           where="--set"))
    dev = select_device(device or cfg.device)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg, data_shape(cfg), dev)
    with torch.no_grad():
        for ebm in (method.ebm, method.ebm_ema.model):
            for _ in range(SN_WARMUP_ITERS):
                power_iteration_(ebm)
    return cfg, method, "random init, spectral norm converged"


# ----------------------------------------------------------------------------- counting
@dataclass
class Counter:
    ebm_grad: int = 0          # images whose EBM gradient w.r.t. the input was evaluated
    ebm_forward: int = 0       # images through the EBM without an input gradient
    init_forward: int = 0      # images through the initializer
    calls: dict = field(default_factory=lambda: {"ebm_grad": 0, "init": 0})


@contextlib.contextmanager
def counting(method):
    """Count EBM gradient evaluations and initializer forwards on every network of ``method``.

    The EBMs' ``energy`` (and a hand-written ``langevin_grad``, where a network has one) are
    wrapped on the instance; the initializers get a forward hook. Removed on exit.
    """
    c = Counter()
    ebms = [method.ebm, method.ebm_ema.model]
    inits = ([method.initializer, method.init_ema.model]
             if getattr(method, "initializer", None) is not None else [])

    def wrap_energy(orig):
        def energy(y, cond, *a, **kw):
            if y.requires_grad and torch.is_grad_enabled():
                c.ebm_grad += y.shape[0]
                c.calls["ebm_grad"] += 1
            else:
                c.ebm_forward += y.shape[0]
            return orig(y, cond, *a, **kw)
        return energy

    def wrap_langevin_grad(orig):
        def langevin_grad(cond):
            fn = orig(cond)

            def grad(y):
                c.ebm_grad += y.shape[0]
                c.calls["ebm_grad"] += 1
                return fn(y)
            return grad
        return langevin_grad

    def hook(_module, args, _out):
        c.init_forward += args[0].shape[0]
        c.calls["init"] += 1

    handles = [m.register_forward_hook(hook) for m in inits]
    for ebm in ebms:
        ebm.energy = wrap_energy(type(ebm).energy.__get__(ebm))
        if hasattr(type(ebm), "langevin_grad"):
            ebm.langevin_grad = wrap_langevin_grad(type(ebm).langevin_grad.__get__(ebm))
    try:
        yield c
    finally:
        for h in handles:
            h.remove()
        for ebm in ebms:
            for name in ("energy", "langevin_grad"):
                ebm.__dict__.pop(name, None)


def nfe_formula(cfg: Config, method) -> tuple[int, int]:
    """Spec 5.1: per image, ``T*K`` EBM gradients (+1 for the Tweedie step) and ``T`` proposals."""
    T, K = method.T, cfg.sample.langevin_steps
    has_init = getattr(method, "initializer", None) is not None
    return T * K + int(cfg.sample.tweedie), (T if has_init else 0)


def count_sampling_nfe(method, n: int) -> tuple[float, float]:
    """Per-image EBM gradient evaluations and initializer forwards of one ``sample(n)`` call."""
    with counting(method) as c:
        method.sample(n)
    return c.ebm_grad / n, c.init_forward / n


# ----------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device, *args) -> float:
    """Wall-clock seconds of ``fn(*args)``, synchronised on a GPU (warm up before calling)."""
    _sync(device)
    t0 = time.perf_counter()
    fn(*args)
    _sync(device)
    return time.perf_counter() - t0


def seconds_and_peak(fn, device: torch.device, *args) -> tuple[float, int | None, int | None]:
    """``seconds`` plus, on a GPU, the peak bytes allocated during the call and the bytes already
    allocated before it (weights, optimizer state); their difference is the call's working
    memory. ``(seconds, None, None)`` elsewhere."""
    if device.type != "cuda":
        return seconds(fn, device, *args), None, None
    _sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    s = seconds(fn, device, *args)
    return s, torch.cuda.max_memory_allocated(device), base


def _keep_peak(memory: dict, kind: str, peak: int | None, base: int | None) -> None:
    """Largest peak over the repeats of one kind of call (``sample``, ``train``)."""
    if peak is not None and peak >= memory.get(f"{kind}_peak_bytes", -1):
        memory[f"{kind}_peak_bytes"], memory[f"{kind}_base_bytes"] = peak, base


@dataclass
class BenchResult:
    name: str
    ebm_params: int
    init_params: int
    ebm_grad_per_image: float
    init_forward_per_image: float
    formula: tuple[int, int]
    formula_text: str
    sample_s_per_image: list[float]
    train_s_per_iter: list[float]
    train_grad_per_example: float
    # GPU only: {sample,train}_{peak,base}_bytes (``seconds_and_peak``); empty elsewhere.
    memory: dict = field(default_factory=dict)


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def round_order(names: list[str], r: int) -> list[str]:
    """The methods in the order round ``r`` (from 0) times them: as given, reversed every other
    round."""
    return list(names) if r % 2 == 0 else list(reversed(names))


def bench_methods(methods: dict, batch: int, train_batch: int, rounds: int) -> dict:
    """Count and time each ``name: (cfg, method)`` over ``rounds`` interleaved rounds (see the
    module docstring); entry ``r`` of every method's time lists comes from round ``r``, so the
    lists pair up by index."""
    sample_s = {name: [] for name in methods}
    train_s = {name: [] for name in methods}
    data, train_grads = {}, {}
    memory = {name: {} for name in methods}
    for name, (_cfg, m) in methods.items():             # warm-up: every code path once
        m.sample(batch, steps=1)
        data[name] = torch.rand(train_batch, *m.data_shape, device=m.device) * 2 - 1
        m.train_step(data[name])
    for r in range(rounds):
        order = round_order(list(methods), r)
        for name in order:
            cfg, m = methods[name]
            with counting(m) as c:
                sec, peak, base = seconds_and_peak(m.sample, m.device, batch)
                sample_s[name].append(sec / batch)
            _keep_peak(memory[name], "sample", peak, base)
            counted, formula = (c.ebm_grad / batch, c.init_forward / batch), nfe_formula(cfg, m)
            if counted != formula:
                raise RuntimeError(f"{name}: counted (EBM gradients, initializer forwards) per "
                                   f"image {counted} != formula {formula} (T*K + tweedie, T)")
        for name in order:
            m = methods[name][1]
            with counting(m) as c:
                sec, peak, base = seconds_and_peak(m.train_step, m.device, data[name])
                train_s[name].append(sec)
            _keep_peak(memory[name], "train", peak, base)
            train_grads[name] = c.ebm_grad / train_batch
    out = {}
    for name, (cfg, m) in methods.items():
        formula = nfe_formula(cfg, m)
        out[name] = BenchResult(cfg.method, _n_params(m.ebm),
                                _n_params(getattr(m, "initializer", None)), formula[0],
                                formula[1], formula,
                                "T*K+1" if cfg.sample.tweedie else "T*K", sample_s[name],
                                train_s[name], train_grads[name], memory[name])
    return out


def round_rows(results: dict) -> list[dict]:
    """Every timed call of ``bench_methods``' results, one row each (``ROUND_COLUMNS``)."""
    names = list(results)
    rows = []
    for r in range(len(results[names[0]].sample_s_per_image)):
        order = round_order(names, r)
        for quantity, attr in TIMED.items():
            rows += [{"round": r + 1, "method": name, "quantity": quantity,
                      "seconds": getattr(results[name], attr)[r], "position": pos}
                     for pos, name in enumerate(order, 1)]
    return rows


# ----------------------------------------------------------------------------- tables
def compare(cdrl: BenchResult, drl: BenchResult, meta: dict) -> list[dict]:
    """One row per quantity: both values, the DRL/CDRL ratio and the claimed ratio. A count's
    ratio is exact; a time's is the paired one over rounds with its 95 % interval
    (``RATIO_COLUMNS``; empty with one round). ``meta["repeats"]`` is the number of rounds."""
    med = statistics.median

    def spread(v: list[float]) -> str:
        return f"{min(v):.4g}-{max(v):.4g}"

    rows = [
        ("EBM parameters", "M", cdrl.ebm_params / 1e6, drl.ebm_params / 1e6, "", "", "", "", ""),
        ("initializer parameters", "M", cdrl.init_params / 1e6, drl.init_params / 1e6, "", "",
         "", "", ""),
        ("EBM gradient evaluations per image", "count", cdrl.ebm_grad_per_image,
         drl.ebm_grad_per_image, CLAIMED_SPEEDUP, cdrl.formula_text, drl.formula_text, "", ""),
        ("initializer forwards per image", "count", cdrl.init_forward_per_image,
         drl.init_forward_per_image, "", "T", "0", "", ""),
        ("sampling time per image", "s", med(cdrl.sample_s_per_image),
         med(drl.sample_s_per_image), CLAIMED_SPEEDUP, "", "", spread(cdrl.sample_s_per_image),
         spread(drl.sample_s_per_image)),
        ("EBM gradient evaluations per training example", "count", cdrl.train_grad_per_example,
         drl.train_grad_per_example, CLAIMED_SPEEDUP, "K", "K", "", ""),
        ("training time per iteration", "s", med(cdrl.train_s_per_iter),
         med(drl.train_s_per_iter), CLAIMED_SPEEDUP, "", "", spread(cdrl.train_s_per_iter),
         spread(drl.train_s_per_iter)),
    ]
    out = []
    for q, unit, a, b, claimed, fa, fb, sa, sb in rows:
        ratio, low, high = (b / a if a else ""), "", ""
        if q in TIMED:
            paired = paired_ratio(getattr(cdrl, TIMED[q]), getattr(drl, TIMED[q]))
            ratio, low, high = (paired.estimate,
                                *(("", "") if paired.low is None else (paired.low, paired.high)))
        out.append(dict(zip(COLUMNS + RATIO_COLUMNS,
                            [q, unit, a, b, ratio, claimed, fa, fb, sa, sb, meta["device"],
                             meta["threads"], meta["batch"], meta["train_batch"],
                             meta["repeats"], meta["weights"], low, high], strict=True)))
    return out


# Quantity (CSV row) -> column of the table people read.
def rounds_path(out: Path) -> Path:
    """``<stem>.rounds.csv`` beside the summary ``out`` (a dot, not ``_``: the workflow's
    ``{case}`` wildcard cannot then match it)."""
    return out.with_name(f"{out.stem}.rounds.csv")


def write_tables(rows: list[dict], meta: dict, out: Path, rounds: list[dict] | None = None
                 ) -> Path:
    """``out`` (CSV, one row per quantity), ``out`` with ``.md`` (``speed_view``) and, given
    ``rounds`` (``round_rows``), every timed call at full precision in ``rounds_path(out)``."""
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, csv_text(rows, COLUMNS + RATIO_COLUMNS, cell=fmt))
    if rounds is not None:
        atomic_write_text(rounds_path(out), csv_text(rounds, ROUND_COLUMNS, cell=str))
    view = speed_view(pd.DataFrame(rows))
    view.notes.insert(0, f"CDRL: `{meta['cdrl']}`; DRL: `{meta['drl']}`.")
    md = out.with_suffix(".md")
    atomic_write_text(md, markdown(view, "CDRL vs DRL speed"))
    return md


# ----------------------------------------------------------------------------- command
def run_bench(args) -> tuple[list[dict], dict, list[dict]]:
    """The summary rows, their settings and every timed call (``round_rows``)."""
    if args.rounds < MIN_ROUNDS:  # argparse checks the CLI; this guards direct callers
        raise ConfigError(f"--rounds {args.rounds}: at least {MIN_ROUNDS} rounds are needed for "
                          "the paired ratio's interval")
    if args.threads:
        torch.set_num_threads(args.threads)
    methods, sources, weights = {}, {}, []
    for kind in ("cdrl", "drl"):
        config, run_dir = getattr(args, kind), getattr(args, f"{kind}_run")
        if not (config or run_dir):
            raise ConfigError(f"give --{kind} CONFIG or --{kind}-run DIR")
        cfg, method, w = build_for_bench(config, run_dir, args.set or [], args.device)
        methods[kind] = (cfg, method)
        sources[kind] = run_dir or config
        weights.append(w)
    results = bench_methods(methods, args.batch, args.train_batch or args.batch, args.rounds)
    sizes = results["cdrl"].ebm_params, results["drl"].ebm_params
    if abs(sizes[0] - sizes[1]) > 0.01 * max(sizes):
        print(f"warning: EBM sizes differ ({sizes[0]} vs {sizes[1]} parameters); the comparison "
              "is not like for like")
    meta = {"device": str(methods["cdrl"][1].device), "threads": torch.get_num_threads(),
            "batch": args.batch, "train_batch": args.train_batch or args.batch,
            "repeats": args.rounds,
            "weights": weights[0] if weights[0] == weights[1] else "; ".join(weights),
            "cdrl": sources["cdrl"], "drl": sources["drl"]}
    return compare(results["cdrl"], results["drl"], meta), meta, round_rows(results)


def _cmd_bench(args) -> int:
    rows, meta, rounds = run_bench(args)
    out = Path(args.out)
    md = write_tables(rows, meta, out, rounds)
    print(md.read_text(), end="")
    print(json.dumps({"csv": args.out, "md": str(md), "rounds": str(rounds_path(out))}))
    return 0


def _rounds(text: str) -> int:
    n = int(text)
    if n < MIN_ROUNDS:
        raise argparse.ArgumentTypeError(
            f"{n} round(s): at least {MIN_ROUNDS} are needed for the paired DRL/CDRL ratio's "
            f"t-interval (default {DEFAULT_ROUNDS})")
    return n


def add_cli(subparsers) -> argparse.ArgumentParser:
    b = subparsers.add_parser("bench", help="CDRL vs DRL: gradient counts, s/image, s/iteration")
    b.add_argument("--cdrl", default=None, help="CDRL experiment config (random weights)")
    b.add_argument("--drl", default=None, help="DRL experiment config (same EBM size)")
    b.add_argument("--cdrl-run", default=None, help="trained CDRL run directory instead")
    b.add_argument("--drl-run", default=None, help="trained DRL run directory instead")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override both configs, e.g. --set ebm.width=32 (repeatable)")
    b.add_argument("--batch", type=int, default=16, help="images per sampling call")
    b.add_argument("--train-batch", type=int, default=None, help="default: --batch")
    b.add_argument("--rounds", "--repeats", dest="rounds", type=_rounds, default=DEFAULT_ROUNDS,
                   help="interleaved timed rounds after one warm-up, each one call per method "
                        f"(at least {MIN_ROUNDS}; --repeats is an alias)")
    b.add_argument("--device", default=None, help="cpu, cuda, ... (default: the config's)")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    b.add_argument("--out", required=True, help="CSV path; the Markdown table goes beside it")
    b.set_defaults(func=_cmd_bench)
    return b
