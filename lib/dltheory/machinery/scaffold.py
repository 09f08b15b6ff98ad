"""``python -m dltheory new PART/slug "Title"``: a new chapter in one command.

Writes ``chapters/PART/slug.md``, a skeleton that already satisfies the chapter contract (``shared/DESIGN.md`` §3):
the parameters cell, presets validated by :func:`~dltheory.machinery.resolve_size`, a theorem box, a sympy cell,
a small torch experiment with a figure, a headline claim, "Try it", two exercises with hidden solutions and the
provenance cell. It lists the chapter in ``_toc.yml`` under its part, adds a placeholder bibliography entry when no
``--cite`` key is given, and prints what to fill in. The skeleton executes and renders as it is, so a new chapter
starts from a green build.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

PARTS = {
    "optimization": "Optimization dynamics",
    "overparametrization": "Overparametrized networks",
    "distillation": "Distillation",
    "transfer": "Transfer",
    "learned-algorithms": "Learned training algorithms",
}
_SLUG_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

TEMPLATE = '''---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {title}

TODO motivation: the question this chapter answers, and the paper that answers it {{cite:p}}`{cite}`.

```{{code-cell}} ipython3
:tags: [parameters]
size = "smoke"
seed = 0
device = "auto"
```

```{{code-cell}} ipython3
import matplotlib.pyplot as plt
import sympy as sp
import torch

from dltheory.machinery import pick_device, resolve_size, start_chapter
from dltheory.numerics.figures import figure
from dltheory.numerics.seeding import seed_everything

dev = pick_device(device)
gen = seed_everything(seed)
run = start_chapter("{slug}", size=size, seed=seed, device=str(dev))
PRESETS = {{
    "smoke": {{"n": 4096}},      # CI: 2 CPU cores, <= 45 s on one thread
    "full": {{"n": 1_000_000}},  # one GPU, paper scale
}}
cfg = resolve_size(size, PRESETS)
```

## The claim

```{{prf:theorem}} TODO the paper's result, in words
:label: thm-{slug}

TODO state it. This skeleton checks a stand-in: the mean of $n$ standard Gaussians is within
$4/\\sqrt{{n}}$ of $0$.
```

## The key step in sympy

```{{code-cell}} ipython3
x = sp.symbols("x")
derived = sp.diff(x**2 / 2, x)   # TODO derive the key step of the paper
paper = x                        # TODO the paper's formula
assert sp.simplify(derived - paper) == 0
run.value("sympy_matches_paper", True)
```

## The experiment

```{{code-cell}} ipython3
---
mystnb:
  image:
    alt: "TODO one sentence saying what the figure shows: here, a histogram of the samples, centred at 0."
---
samples = torch.randn(cfg.n, generator=gen, dtype=torch.float64)
mean = run.value("sample_mean", samples.mean())
scaled_err = run.value("scaled_error", abs(mean) * cfg.n**0.5)

fig, ax = figure()  # the book's one figure style (dltheory.numerics.figures)
ax.hist(samples.numpy(), bins=60, density=True)
ax.set_xlabel("sample value (dimensionless)")
ax.set_ylabel("density")
ax.set_title("TODO: the figure that shows the claim")
plt.show()
```

The sample mean is {{glue:text}}`sample_mean:.4f`, that is {{glue:text}}`scaled_error:.2f` standard errors from 0.

## The claim, checked

```{{code-cell}} ipython3
:tags: [check]
run.claim("mean-within-4-se", "the sample mean is within 4 standard errors of 0 (TODO: the paper's result)",
          value=scaled_err, expected=4.0, tolerance=0, comparison="at_most",
          source="TODO paper, equation or figure", headline=True)
```

```{{admonition}} What this toy does not show
:class: warning

TODO: where the toy falls short of the paper, with the numbers.
```

## Try it

- TODO: a parameter to change (e.g. `PRESETS["smoke"]["n"]`) and what to expect.

## Exercises

```{{exercise-start}}
:label: {slug}-ex-1
```
TODO a first exercise. This one checks itself: write `standard_error(n)`, the standard deviation of the mean of
$n$ standard Gaussians; the check under it (run it in the student notebook) says whether it is right.
```{{exercise-end}}
```

```{{code-cell}} ipython3
:tags: [answer, hide-input]
# answer: {slug}-standard-error
def standard_error(n):
    return 1 / n**0.5  # SOLUTION
```

```{{code-cell}} ipython3
:tags: [autocheck, remove-cell]
# checks: {slug}-standard-error
from dltheory.machinery.exercises import kind_ok
assert kind_ok(standard_error, callable), "define a function standard_error(n)"
# case
from dltheory.machinery.exercises import matches
assert matches(standard_error, "91e73489672fe54b", at=[(4,), (100,), (4096,)]), (
    "not yet right: the variance of a mean of n independent unit-variance samples is 1/n")
```

```{{solution-start}} {slug}-ex-1
:class: dropdown
```
TODO its solution.
```{{solution-end}}
```

```{{exercise-start}}
:label: {slug}-ex-2
```
TODO a second exercise, also checked: write `z_score(mean, n)`, how many standard errors a sample mean of $n$
standard Gaussians is from 0 (the quantity the claim bounds).
```{{exercise-end}}
```

```{{code-cell}} ipython3
:tags: [answer, hide-input]
# answer: {slug}-z-score
def z_score(mean, n):
    return abs(mean) * n**0.5  # SOLUTION
```

```{{code-cell}} ipython3
:tags: [autocheck, remove-cell]
# checks: {slug}-z-score
from dltheory.machinery.exercises import kind_ok
assert kind_ok(z_score, callable), "define a function z_score(mean, n)"
# case
from dltheory.machinery.exercises import matches
assert matches(z_score, "c59f144d97e7a8fc", at=[(0.01, 100), (-0.002, 4096)]), (
    "not yet right: divide the distance of the mean from 0 by the standard error")
```

```{{solution-start}} {slug}-ex-2
:class: dropdown
```
TODO its solution.
```{{solution-end}}
```

## Provenance

```{{code-cell}} ipython3
:tags: [check, remove-input]
run.finish()
```
'''

BIB_TEMPLATE = """
@misc{{{key},
  title  = {{TODO: the paper behind ``{title}''}},
  author = {{TODO}},
  year   = {{2026}},
  note   = {{Placeholder written by python -m dltheory new; replace it with the paper's entry}}
}}
"""


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_target(target: str) -> tuple[str, str]:
    """``"PART/slug"`` → ``(part, slug)``, checked: the part is one of the book's parts and the slug is lower-case
    letters, digits and dashes."""
    part, _, slug = target.strip("/").removesuffix(".md").partition("/")
    if part.startswith("chapters/"):
        part = part.removeprefix("chapters/")
    if not slug or "/" in slug:
        raise ValueError(f"expected PART/slug (e.g. optimization/my-chapter), got {target!r}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
    if not _SLUG_RE.match(slug):
        raise ValueError(f"slug {slug!r} must be lower-case letters, digits and single dashes (e.g. my-chapter)")
    return part, slug


def add_to_toc(toc_text: str, part: str, slug: str) -> str:
    """``_toc.yml`` with ``chapters/PART/slug`` appended to the sections of ``chapters/PART/index`` (text-level
    edit, so comments and layout are kept)."""
    lines = toc_text.splitlines()
    index = f"chapters/{part}/index"
    at = next((i for i, ln in enumerate(lines) if ln.strip() == f"- file: {index}"), None)
    if at is None:
        raise ValueError(f"_toc.yml has no entry for {index}; add the part first")
    indent = len(lines[at]) - len(lines[at].lstrip())
    end = at + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    block = lines[at + 1:end]
    while block and not block[-1].strip():
        end -= 1
        block = block[:-1]
    entry_indent = " " * (indent + 4)
    if not any(ln.strip() == "sections:" for ln in block):
        new = [" " * (indent + 2) + "sections:", f"{entry_indent}- file: chapters/{part}/{slug}"]
    else:
        sec = next(ln for ln in block if ln.strip().startswith("- file:"))
        entry_indent = sec[:len(sec) - len(sec.lstrip())]
        new = [f"{entry_indent}- file: chapters/{part}/{slug}"]
    return "\n".join(lines[:end] + new + lines[end:]) + "\n"


def new_chapter(target: str, title: str, root: Path, cite: str | None = None) -> Path:
    """Write the skeleton of ``chapters/PART/slug.md``, list it in ``_toc.yml`` and (without ``cite``) add a
    placeholder bibliography entry. Raises ``ValueError`` (nothing written) for a bad target, an existing chapter
    or slug, or an empty title. Returns the new file."""
    from dltheory.machinery.runner import chapters

    part, slug = parse_target(target)
    if not title.strip():
        raise ValueError('give the chapter a title: python -m dltheory new PART/slug "Title"')
    dest = root / "chapters" / part / f"{slug}.md"
    if dest.exists():
        raise ValueError(f"{dest.relative_to(root)} exists already; pick another slug")
    if slug in chapters(root):
        raise ValueError(f"the slug {slug!r} is taken by {chapters(root)[slug].relative_to(root)}; slugs are unique")
    toc = root / "_toc.yml"
    new_toc = add_to_toc(toc.read_text(), part, slug)
    bib = root / "book" / "references.bib"
    key = cite or slug.replace("-", "_") + "_todo"
    bib_text = bib.read_text()
    if cite and f"{{{cite}," not in bib_text:
        raise ValueError(f"--cite {cite!r} is not a key of book/references.bib; add the entry first or leave "
                         "--cite out for a placeholder")
    text = TEMPLATE.format(title=title.strip(), slug=slug, cite=key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(dest, text)
    index = root / "chapters" / part / "index.md"
    index_text = index.read_text() if index.is_file() else f"# {PARTS[part]}\n"
    try:
        if "{tableofcontents}" not in index_text:  # a part's first chapter: its index lists its chapters from now on
            _write_atomic(index, index_text.rstrip("\n") + "\n\n```{tableofcontents}\n```\n")
        if not cite and f"{{{key}," not in bib_text:
            _write_atomic(bib, bib_text.rstrip("\n") + "\n" + BIB_TEMPLATE.format(key=key, title=title.strip()))
        _write_atomic(toc, new_toc)
    except BaseException:
        dest.unlink(missing_ok=True)
        if index.is_file():
            _write_atomic(index, index_text)
        raise
    return dest


def next_steps(path: Path, root: Path, cited: bool) -> str:
    """What to fill in, printed by ``python -m dltheory new``."""
    rel = path.relative_to(root)
    slug = path.stem
    steps = [
        f"wrote {rel} and listed it in _toc.yml" + ("" if cited else "; a placeholder entry is in book/references.bib"),
        "fill in, in order:",
        "  1. the motivation and the theorem box (the paper's result, marked informal/simplified where you deviate)",
        "  2. the sympy cell: derive the key step and compare it with the paper's formula",
        "  3. the experiment from library functions (new code goes to lib/dltheory/<part>/ with tests in tests/)",
        "  4. the claims: one headline=True (the paper's main result), each with its source; never type a number",
        "  5. 'What this toy does not show', Try it, exercises, and the presets (smoke <= 45 s on one thread)",
        f"run it: python -m dltheory run {slug}   (then `make book` to render)",
    ]
    return "\n".join(steps)
