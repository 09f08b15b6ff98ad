"""Optimization dynamics (``chapters/optimization/``): how optimization choices shape learning dynamics.

* :mod:`.eos`: *Gradient descent at the Edge of Stability* (``edge-of-stability.md``);
* :mod:`.sde`, :mod:`.scaling`: *SDEs for adaptive methods and the square-root scaling rule* (``sde-scaling-rules.md``);
* :mod:`.gradient_noise`: *Is the noise of SGD Gaussian?* (``gradient-noise.md``; per-example gradients are
  :mod:`dltheory.numerics.pergrad`);
* :mod:`.bnres`: *Batch norm and residual connections, together* (``batchnorm-residual.md``).

A chapter imports the part's modules from here (``from dltheory.optimization import eos``); each module's docstring
points back to its chapter and paper. The package imports nothing itself, so a chapter's cache key covers only the
modules it uses. Parts use the shared numerics and never import another part.
"""
