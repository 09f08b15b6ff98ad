"""The machinery of an executable chapter: what makes a notebook a chapter of the book. It knows nothing about deep
learning (a test reads the import graph and keeps it so).

What a chapter uses (see the chapter contract in ``shared/DESIGN.md`` §3 and the "Running the book" page):

* :func:`start_chapter` (:mod:`.claims`): the record of a run — values glued into the text, claims checked, the
  results JSON and the provenance box;
* :func:`resolve_size` (:mod:`.sizes`): the chapter's ``smoke`` / ``full`` presets, validated;
* :func:`pick_device` (:mod:`.device`): the device of the run (``--device``, ``$DLTHEORY_DEVICE``, cuda → mps → cpu).

Behind them: :mod:`.paths` (where the book lives), :mod:`.cache` (cache keys from the modules a chapter imports),
:mod:`.runner` (papermill, parallel processes, atomic outputs), :mod:`.build` (HTML), :mod:`.student` (student
edition), :mod:`.scaffold` (``python -m dltheory new``) and :mod:`.cli` (``python -m dltheory``).
"""

from dltheory.machinery.claims import ClaimFailed, start_chapter
from dltheory.machinery.device import pick_device
from dltheory.machinery.sizes import resolve_size

__all__ = ["ClaimFailed", "pick_device", "resolve_size", "start_chapter"]
