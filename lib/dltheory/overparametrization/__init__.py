"""Overparametrized networks (``chapters/overparametrization/``): what wide networks provably learn.

* :mod:`.activations`: *How the activation function sets the Gram matrix's smallest eigenvalue*
  (``activation-gram.md``);
* :mod:`.rnn`, :mod:`.languages`: *What over-parametrized RNNs provably learn* (``rnn-learning.md``).

A chapter imports the part's modules from here (``from dltheory.overparametrization import activations``); each module's
docstring points back to its chapter and paper. The package imports nothing itself, so a chapter's cache key covers only
the modules it uses. Parts use the shared numerics and never import another part.
"""
