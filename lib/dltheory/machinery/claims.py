"""Values, claims and the results JSON of a chapter run (``shared/DESIGN.md`` §4).

A chapter opens a run right after its parameters cell::

    run = start_chapter("edge-of-stability", size=size, seed=seed, device=str(dev))
    run.value("eta", 0.02)                        # glued for the text and recorded
    run.claim("sharpness-at-2-over-eta", "late sharpness is within 10% of 2/eta",
              value=0.98, expected=1.0, tolerance=0.1, source="Cohen et al. 2021, Fig. 1",
              name="sharpness_ratio_late_min")    # checked, recorded, glued under ``name``
    run.finish()                                  # last cell: JSON + provenance box, raises if a claim failed

``finish`` writes ``<results>/<slug>.json`` atomically (temp file + ``os.replace``) *before* raising
:class:`ClaimFailed`, so a failing chapter still leaves its full record for inspection.
"""

from __future__ import annotations

import html
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

COMPARISONS = ("within", "at_least", "at_most")
_SLUG_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")
_VERSION_PACKAGES = ("torch", "numpy", "scipy", "sympy", "matplotlib", "scikit-learn")


class ClaimFailed(AssertionError):
    """Raised by :meth:`ChapterRun.finish` when at least one claim of the chapter does not hold."""


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the book's environment
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _scalar(name: str, value):
    """Convert numpy / torch scalars to plain JSON scalars; reject anything else."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as exc:
            shape = getattr(value, "shape", "?")
            raise TypeError(f"value {name!r} must be a scalar, got an array of shape {shape}") from exc
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"value {name!r} is {value}; a recorded value must be finite")
        return value
    if isinstance(value, str):
        return value
    raise TypeError(f"value {name!r} has type {type(value).__name__}; record ints, floats, bools or strings")


def versions() -> dict[str, str]:
    """Versions of python, dltheory and the numerical packages, for provenance."""
    from dltheory import __version__

    out = {"python": platform.python_version(), "dltheory": __version__}
    for pkg in _VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


@dataclass
class Claim:
    id: str
    statement: str
    value: float
    expected: float
    tolerance: float
    holds: bool
    source: str
    comparison: str = "within"
    headline: bool = False

    def as_json(self) -> dict:
        return {"id": self.id, "statement": self.statement, "value": self.value, "expected": self.expected,
                "tolerance": self.tolerance, "holds": self.holds, "source": self.source,
                "comparison": self.comparison, "headline": self.headline}


def check(value: float, expected: float, tolerance: float, comparison: str = "within") -> bool:
    """Does a claim hold? ``within``: ``|value - expected| <= tolerance``; ``at_least``:
    ``value >= expected - tolerance``; ``at_most``: ``value <= expected + tolerance``."""
    if comparison not in COMPARISONS:
        raise ValueError(f"unknown comparison {comparison!r}; use one of {', '.join(COMPARISONS)}")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")
    if not math.isfinite(value):
        return False
    if comparison == "within":
        return abs(value - expected) <= tolerance
    if comparison == "at_least":
        return value >= expected - tolerance
    return value <= expected + tolerance


@dataclass
class ChapterRun:
    """The record of one chapter execution; create it with :func:`start_chapter`."""

    chapter: str
    size: str
    seed: int
    device: str
    values: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    finished: bool = False

    def value(self, name: str, value, glue: bool = True):
        """Record ``value`` under ``name`` (a stable identifier) and glue it for the text. Returns the value
        as a plain python scalar, so ``x = run.value("x", tensor.mean())`` is convenient."""
        if not name or not name.replace("_", "a").isalnum() or not name[0].isalpha():
            raise ValueError(f"value name {name!r} must be an identifier like 'sharpness_final'")
        v = _scalar(name, value)
        self.values[name] = v
        if glue and _in_ipython():
            from myst_nb import glue as _glue

            _glue(name, v, display=False)
        return v

    def claim(self, id: str, statement: str, value, expected, tolerance, source: str,
              comparison: str = "within", name: str | None = None, headline: bool = False) -> bool:
        """Check one quantitative claim and record it (``shared/DESIGN.md`` §4). ``name``, if given, also
        records and glues the value under that name. ``headline=True`` marks the chapter's headline: the paper's
        main result, which the landing table and the claims ledger quote (one per chapter). Never raises for a
        failed claim: the failure is raised by :meth:`finish`, after everything is recorded."""
        if any(c.id == id for c in self.claims):
            raise ValueError(f"claim id {id!r} is used twice in chapter {self.chapter!r}")
        if headline and any(c.headline for c in self.claims):
            first = next(c.id for c in self.claims if c.headline)
            raise ValueError(f"chapter {self.chapter!r} already has a headline claim ({first!r}); mark only the "
                             "paper's main result with headline=True")
        if not source:
            raise ValueError(f"claim {id!r} needs a source (paper, equation or figure)")
        value = float(_scalar(id, value)) if not isinstance(value, float) else value
        expected, tolerance = float(expected), float(tolerance)
        holds = check(value, expected, tolerance, comparison)
        c = Claim(id, statement, value, expected, tolerance, bool(holds), source, comparison, bool(headline))
        self.claims.append(c)
        if name is not None:
            self.value(name, value)
        sym = {"within": "±", "at_least": "≥", "at_most": "≤"}[comparison]
        rel = f"{expected:.4g} {sym} {tolerance:.3g}" if comparison == "within" else (
            f"{sym} {expected:.4g}" + (f" (slack {tolerance:.3g})" if tolerance else ""))
        print(f"[{'HOLDS' if holds else 'FAILS'}] {id}: {value:.4g} (expected {rel}) - {statement}")
        return bool(holds)

    def as_json(self) -> dict:
        return {
            "chapter": self.chapter, "size": self.size, "seed": self.seed, "device": self.device,
            "versions": versions(), "wall_s": round(time.perf_counter() - self.t0, 3),
            "values": dict(self.values), "claims": [c.as_json() for c in self.claims],
        }

    def finish(self, results_dir: str | os.PathLike | None = None, display: bool = True) -> dict:
        """Write the results JSON atomically, show the provenance box and raise :class:`ClaimFailed` if any
        claim failed. Returns the JSON dict."""
        if self.finished:
            raise RuntimeError(f"chapter run {self.chapter!r} already finished")
        self.finished = True
        data = self.as_json()
        out = Path(results_dir) if results_dir is not None else _default_results_dir()
        write_json_atomic(out / f"{self.chapter}.json", data)
        if display:
            _display_provenance(data)
        failed = [c for c in self.claims if not c.holds]
        if failed:
            lines = "; ".join(f"{c.id}: value {c.value:.4g} vs expected {c.expected:.4g} "
                              f"({c.comparison}, tol {c.tolerance:.3g})" for c in failed)
            raise ClaimFailed(f"{len(failed)} claim(s) of {self.chapter!r} failed: {lines}")
        return data


def _default_results_dir() -> Path:
    from dltheory.machinery.paths import results_dir

    try:
        return results_dir()
    except FileNotFoundError:  # a notebook copied out of the repository (student edition, Colab)
        return Path.cwd() / "dltheory-results"


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON to ``path`` via a temp file in the same folder and ``os.replace``; a crash
    never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def provenance_html(data: dict) -> str:
    """The provenance box shown at the end of each chapter page, rendered from the results dict."""
    e = html.escape
    held = sum(c["holds"] for c in data["claims"])
    rows = "".join(
        f"<tr><td>{'✅' if c['holds'] else '❌'}</td><td><code>{e(c['id'])}</code>"
        f"{' <strong>(headline)</strong>' if c.get('headline') else ''}</td>"
        f"<td>{c['value']:.4g}</td><td>{e(c['source'])}</td></tr>" for c in data["claims"])
    vers = ", ".join(f"{e(k)} {e(str(v))}" for k, v in data["versions"].items())
    return (
        '<div class="admonition note dltheory-provenance"><p class="admonition-title">Provenance of this page</p>'
        f"<p>Executed at size <strong>{e(data['size'])}</strong>, seed <strong>{data['seed']}</strong>, "
        f"on <strong>{e(data['device'])}</strong> in <strong>{data['wall_s']:.1f} s</strong>. "
        f"{held} of {len(data['claims'])} claims held.</p>"
        f"<p>Versions: {vers}.</p>"
        '<table class="dltheory-claims"><thead><tr><th></th><th>claim</th><th>value</th><th>source</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></div>")


def _display_provenance(data: dict) -> None:
    if not _in_ipython():
        return
    from IPython.display import HTML, display

    display(HTML(provenance_html(data)))


def start_chapter(chapter: str, size: str, seed: int, device: str) -> ChapterRun:
    """Open the record of a chapter run. ``chapter`` is the slug (file name without ``.md``)."""
    if not chapter or not set(chapter) <= _SLUG_CHARS:
        raise ValueError(f"chapter slug {chapter!r} must be lower-case letters, digits and dashes")
    return ChapterRun(chapter=chapter, size=str(size), seed=int(seed), device=str(device))


def headline_claim(data: dict) -> dict | None:
    """The headline claim of a results dict (the one marked ``headline``), else its first claim, else ``None``."""
    claims = data.get("claims") or []
    return next((c for c in claims if c.get("headline")), claims[0] if claims else None)
