"""Learned training algorithms (``chapters/learned-algorithms/``): learning the training algorithm itself.

* :mod:`.lopt`, :mod:`.es`, :mod:`.tasks`: *Learned optimizers meta-trained on a compute diet*
  (``learned-optimizers.md``): a Celo2-base normalized rule with Adam on biases and a learned step, PES
  meta-training of several meta-seeds and variants side by side, the warm start (normalized Adam), and scaled-up
  tasks for Celo2's scaling claim.
* :mod:`.ssm`: *From attention to state-space models* (``attention-to-ssm.md``): associative recall, Hedgehog linear
  attention, the scalar-decay SSD mixer (masked form and recurrence, ones-channel normalizer), students built on the
  teacher's copied backbone, attention transfer and KL distillation.

A chapter imports the part's modules from here (``from dltheory.learned_algorithms import es``); each module's docstring
points back to its chapter and paper. The package imports nothing itself, so a chapter's cache key covers only the
modules it uses. Parts use the shared numerics and never import another part.
"""
