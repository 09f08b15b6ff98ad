"""Learned training algorithms (``chapters/learned-algorithms/``): learning the training algorithm itself.

* :mod:`.lopt`, :mod:`.es`, :mod:`.tasks`: *Learned optimizers meta-trained on a compute diet*
  (``learned-optimizers.md``).

A chapter imports the part's modules from here (``from dltheory.learned_algorithms import es``); each module's docstring
points back to its chapter and paper. The package imports nothing itself, so a chapter's cache key covers only the
modules it uses. Parts use the shared numerics and never import another part.
"""
