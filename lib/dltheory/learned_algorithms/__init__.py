"""Learned training algorithms (``chapters/learned-algorithms/``): learning the training algorithm itself.

* :mod:`.lopt`, :mod:`.es`, :mod:`.tasks`: *Learned optimizers meta-trained on a compute diet*
  (``learned-optimizers.md``).
* :mod:`.ssm`: *From attention to state-space models* (``attention-to-ssm.md``): associative recall, Hedgehog linear
  attention, the scalar-decay SSD mixer (masked form and recurrence, ones-channel normalizer), students built on the
  teacher's copied backbone, attention transfer and KL distillation.

A chapter imports the part's modules from here (``from dltheory.learned_algorithms import es``); each module's docstring
points back to its chapter and paper. The package imports nothing itself, so a chapter's cache key covers only the
modules it uses. Parts use the shared numerics and never import another part.
"""
