"""Distillation (``chapters/distillation/``): moving capabilities between models.

* :mod:`.distill`, :mod:`.parity`: *Progressive distillation and its implicit curriculum*
  (``progressive-distillation.md``);
* :mod:`.gpt_distill`: its transformer variant: parity as bit tokens for the shared GPT-2-style transformer, a
  many-head teacher and its checkpoints, cross-entropy and progressive students side by side as replicas, the
  reference's warm-up + cosine Adam schedule;
* :mod:`.cel`: *Learning with privileged context* (``context-enhanced-learning.md``);
* :mod:`.sdzero`: *Self-distillation from binary rewards* (``self-distillation-zero.md``);
* :mod:`.grace`: *In good GRACEs: which teacher?* (``teacher-selection.md``): the GRACE score (projected per-example
  student gradients, splits by prompt, smoothed second moment, tr(K~^-1 K_out)), a toy of teachers with parity
  knowledge, systematic error and temperature, and the student distilled from every teacher side by side;
* :mod:`.skills`: *Teaching the skills a student lacks* (``skill-targeted-training.md``): the missing-skill profile,
  STAT-Sel / STAT-Syn data, students batched over arms x seeds.

A chapter imports the part's modules from here (``from dltheory.distillation import distill``); each module's docstring
points back to its chapter and paper. The package imports nothing itself, so a chapter's cache key covers only the
modules it uses. Parts use the shared numerics and never import another part.
"""
