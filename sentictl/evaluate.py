"""`sentictl eval`: accuracy, macro-F1, per-class precision/recall, confusion matrix and label
agreement with fp32, for every variant of a model, on a labelled CSV.

The metrics are plain numpy so that they can be checked by hand (tests/test_eval.py does).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .console import notice
from .errors import InputError, SentictlError
from .variantlist import parse_variant_list

if TYPE_CHECKING:
    from .engine.model import Model

# Label ids: a list, or an array of them (a model's argmax).
LabelIds = Sequence[int] | np.ndarray


# ----------------------------------------------------------------------------- metrics
def confusion_matrix(gold: LabelIds, pred: LabelIds, n_labels: int) -> np.ndarray:
    """Counts with rows = gold label id, columns = predicted label id."""
    gold_arr = np.asarray(gold, dtype=np.int64)
    pred_arr = np.asarray(pred, dtype=np.int64)
    if gold_arr.shape != pred_arr.shape:
        raise ValueError(f"gold has {gold_arr.size} labels, pred {pred_arr.size}")
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (gold_arr, pred_arr), 1)
    return matrix


def _ratio(num: float, den: float) -> float:
    # sklearn's zero_division=0: a class never predicted has precision 0, not NaN.
    return float(num / den) if den else 0.0


def metrics(gold: LabelIds, pred: LabelIds, labels: Sequence[str], reference: LabelIds | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, agreement.

    Macro-F1 averages over the labels that occur in gold or in pred (sklearn's default set),
    so a label absent from both does not drag the mean down with a meaningless 0.
    """
    n = len(labels)
    matrix = confusion_matrix(gold, pred, n)
    total = int(matrix.sum())
    tp = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for i, label in enumerate(labels):
        precision = _ratio(tp[i], predicted[i])
        recall = _ratio(tp[i], support[i])
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        if support[i] or predicted[i]:
            f1s.append(f1)
    out: dict[str, Any] = {
        "n": total,
        "accuracy": _ratio(tp.sum(), total),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "confusion": {"labels": list(labels), "rows": "gold", "columns": "predicted", "matrix": matrix.tolist()},
    }
    if reference is not None:
        ref = np.asarray(reference)
        out["agreement_vs_fp32"] = _ratio(int((ref == np.asarray(pred)).sum()), ref.size)
    return out


# ----------------------------------------------------------------------------- data
def read_labelled(
    path: str | Path, labels: Sequence[str], text_column: str = "text", label_column: str = "label"
) -> tuple[list[str], list[int]]:
    """A labelled CSV → texts and label ids, matching label names (case-insensitively) to the model's."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in (text_column, label_column) if c not in header]
            if missing:
                raise InputError(
                    f"{path} has no column {', '.join(repr(c) for c in missing)} "
                    f"(columns: {', '.join(header) or 'none'}); use --text-column / --label-column"
                )
            rows = [(r[label_column], r[text_column]) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    rows = [(lab, text) for lab, text in rows if text is not None and text.strip()]
    if not rows:
        raise InputError(f"{path} has no labelled rows")
    index = {name.strip().lower(): i for i, name in enumerate(labels)}
    unknown: dict[str, int] = {}
    for lab, _ in rows:
        key = (lab or "").strip().lower()
        if key not in index:
            unknown[lab or ""] = unknown.get(lab or "", 0) + 1
    if unknown:
        listed = ", ".join(f"{name!r} ({count}×)" for name, count in sorted(unknown.items(), key=lambda kv: -kv[1]))
        raise InputError(
            f"{path} has labels the model does not know: {listed}. "
            f"The model's labels are: {', '.join(labels)}; rename them in the data (matching ignores case)"
        )
    return [text for _, text in rows], [index[(lab or "").strip().lower()] for lab, _ in rows]


# ----------------------------------------------------------------------------- run
@dataclass
class _Eval:
    """One eval run: the model's manifest and labels, the data, and where each variant may run."""

    path: Path  # the resolved model folder
    manifest: dict[str, Any]
    labels: list[str]
    texts: list[str]
    gold: list[int]
    provider: str  # --provider: auto runs each variant on the provider it was built for
    explicit: bool  # variants were named (not "all"): each runs, on cpu if its provider is absent
    have: set[str]  # the providers available here
    load_kwargs: dict[str, Any]  # threads, long and the run budget, for every load
    reference_model: Model | None  # fp32, already loaded (None: not shipped)
    quiet: bool

    def shipped(self, name: str) -> bool:
        return bool(self.manifest["variants"][name].get("shipped", True))

    def target(self, name: str) -> str:
        """The provider a variant was built for."""
        return str(self.manifest["variants"][name].get("provider", "cpu"))

    def runs_on(self, name: str) -> str | None:
        """The provider a variant runs on here; None: its provider is absent and it was not named."""
        run_on = self.provider if self.provider != "auto" else self.target(name)
        if run_on in self.have:
            return run_on
        return "cpu" if self.explicit else None


def run_eval(
    model_dir: str | Path | None,
    data: str | Path,
    variants: str | None = "all",
    text_column: str = "text",
    label_column: str = "label",
    provider: str = "auto",
    threads: int | None = None,
    long: str = "truncate",
    run_tokens: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Evaluate each requested variant (and fp32, the reference) on a labelled CSV."""
    run = _start(model_dir, data, variants, text_column, label_column, provider, threads, long, run_tokens, quiet)
    wanted = parse_variant_list(variants, list(run.manifest["variants"]))
    report: dict[str, Any] = {
        "data": str(data),
        "texts": len(run.texts),
        "model_dir": str(run.path),
        "labels": run.labels,
        "gold_distribution": {
            run.labels[i]: int(c) for i, c in enumerate(np.bincount(run.gold, minlength=len(run.labels)))
        },
        "variants": {},
        "skipped": {},
    }
    # The variants a gate must see: the ones named in --variants, else every one this machine can
    # run (a variant built for an absent provider is not expected under "all"; a failed run is).
    expected: list[str] = []
    reference: np.ndarray | None = None
    for name in ["fp32"] + [v for v in wanted if v != "fp32"]:
        if name in wanted and (run.explicit or (run.shipped(name) and run.runs_on(name) is not None)):
            expected.append(name)
        outcome = _evaluate(run, name, reference)
        if isinstance(outcome, str):
            report["skipped"][name] = outcome
            continue
        result, pred = outcome
        if name == "fp32":
            reference = pred
        report["variants"][name] = result
    if "fp32" in report["variants"]:
        base = report["variants"]["fp32"]["accuracy"]
        for result in report["variants"].values():
            result["drop_points"] = round((base - result["accuracy"]) * 100, 4)
    if "fp32" not in wanted:
        report["variants"].get("fp32", {})["reference_only"] = True
    report["expected"] = expected
    return report


def _start(
    model_dir: str | Path | None,
    data: str | Path,
    variants: str | None,
    text_column: str,
    label_column: str,
    provider: str,
    threads: int | None,
    long: str,
    run_tokens: int | None,
    quiet: bool,
) -> _Eval:
    """Load the model (and fp32, the reference, when it ships) and read the labelled data."""
    from . import config
    from .engine.model import available_providers, load

    resolved = config.resolve_model_dir(model_dir)
    kwargs: dict[str, Any] = {"threads": threads, "long": long}
    if run_tokens:
        kwargs["run_tokens"] = run_tokens
    # The first load resolves the directory (and says so when it is the bundled one).
    first = load(model_dir, quiet=quiet, provider="cpu", **kwargs)
    shipped = bool(first.manifest["variants"]["fp32"].get("shipped", True))
    reference_model = (
        first
        if first.variant == "fp32"
        else (load(resolved.path, quiet=True, provider="cpu", variant="fp32", **kwargs) if shipped else None)
    )
    texts, gold = read_labelled(data, first.labels, text_column, label_column)
    return _Eval(
        path=resolved.path,
        manifest=first.manifest,
        labels=first.labels,
        texts=texts,
        gold=gold,
        provider=provider,
        explicit=bool(variants and variants.strip().lower() != "all"),
        have=set(available_providers()),
        load_kwargs=kwargs,
        reference_model=reference_model,
        quiet=quiet,
    )


def _evaluate(run: _Eval, name: str, reference: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray] | str:
    """One variant's metrics and predicted label ids, or why it was skipped."""
    from .engine.model import load

    if not run.shipped(name):
        # e.g. the bundled model: its fp32 figures are in the manifest, its fp32 file is not.
        return NOT_SHIPPED
    run_on = run.runs_on(name)
    if run_on is None:
        return (
            f"built for the {run.target(name)} provider, which is not available here "
            "(name it in --variants to run it on cpu)"
        )
    _progress(run.quiet, f"eval: {name} on {len(run.texts)} texts ({run_on})")
    try:
        model = (
            run.reference_model
            if name == "fp32" and run_on == "cpu" and run.reference_model is not None
            else load(run.path, quiet=True, provider=run_on, variant=name, **run.load_kwargs)
        )
        probs, _ = model.predict_proba(run.texts)
    except SentictlError as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0]
    except Exception as exc:  # ORT kernels missing for a variant on this provider
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    pred = probs.argmax(axis=1)
    result = metrics(run.gold, pred, run.labels, reference=pred if name == "fp32" else reference)
    result["provider"] = run_on
    return result, pred


NOT_SHIPPED = "its file is not shipped with this model; only its export figures are in the manifest"


def unchecked_gates(
    report: dict[str, Any], min_accuracy: float | None = None, max_drop: float | None = None
) -> list[str]:
    """The requested gates a report could not check, each with the reason (empty list: all were checked).

    A gate that was asked for but never evaluated must not read as a pass: --max-drop needs fp32,
    the reference, to have run; both need every expected variant (named in --variants, or under "all"
    every shipped one this machine can run) to have run.
    """
    skipped = report.get("skipped", {})
    needed: dict[str, list[str]] = {}
    if max_drop is not None and "fp32" not in report["variants"]:
        needed.setdefault("fp32", []).append(f"--max-drop {max_drop} (measured against fp32)")
    for name in report.get("expected", []):
        if name not in report["variants"]:
            if min_accuracy is not None:
                needed.setdefault(name, []).append(f"--min-accuracy {min_accuracy}")
            if max_drop is not None and name != "fp32":
                needed.setdefault(name, []).append(f"--max-drop {max_drop}")
    # One line per variant that did not run, naming every gate it leaves unchecked.
    out = [
        f"{name} was skipped ({skipped.get(name, 'it did not run')}), so {' and '.join(gates)} could not be checked"
        for name, gates in needed.items()
    ]
    if min_accuracy is not None and not report["variants"] and not needed:
        out.append(f"--min-accuracy {min_accuracy} could not be checked: no variant was evaluated")
    return out


def check_gates(report: dict[str, Any], min_accuracy: float | None = None, max_drop: float | None = None) -> list[str]:
    """The gates a report misses (empty list: all passed); see unchecked_gates for the ones it could not check."""
    failures = []
    for name, result in report["variants"].items():
        if result.get("reference_only"):
            continue
        if min_accuracy is not None and result["accuracy"] < min_accuracy:
            failures.append(f"{name}: accuracy {result['accuracy']:.4f} < --min-accuracy {min_accuracy}")
        if max_drop is not None and name != "fp32" and result.get("drop_points", 0.0) > max_drop:
            failures.append(f"{name}: {result['drop_points']:.2f} points below fp32 > --max-drop {max_drop}")
    return failures


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables: one summary row per variant, then per-class figures and confusion matrices."""
    labels = report["labels"]
    lines = [
        f"{report['texts']} texts from {report['data']} ("
        + ", ".join(f"{k} {v}" for k, v in report["gold_distribution"].items())
        + ")",
        "",
        "| variant | accuracy | macro-F1 | Δ vs fp32 (pts) | agreement vs fp32 | "
        + " | ".join(f"{label} P/R" for label in labels)
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(labels),
    ]
    for name, r in report["variants"].items():
        pr = " | ".join(f"{r['per_class'][lab]['precision']:.3f}/{r['per_class'][lab]['recall']:.3f}" for lab in labels)
        lines.append(
            f"| {name}{' (reference)' if r.get('reference_only') else ''} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            f"{_fmt(None if r.get('drop_points') is None else -r['drop_points'], '{:+.2f}')} | {_fmt(r.get('agreement_vs_fp32', 1.0 if name == 'fp32' else None), '{:.2%}')} | {pr} |"
        )
    if report["skipped"]:
        lines.append("")
    for name, reason in report["skipped"].items():
        lines.append(f"- {name}: skipped, {reason}")
    width = max(len(lab) for lab in labels) + 2
    for name, r in report["variants"].items():
        lines += [
            "",
            f"confusion ({name}; rows gold, columns predicted):",
            "",
            "| gold \\ pred | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for lab, row in zip(labels, r["confusion"]["matrix"]):
            lines.append(f"| {lab:<{width}} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _progress(quiet: bool, message: str) -> None:
    if not quiet:
        notice(message)
