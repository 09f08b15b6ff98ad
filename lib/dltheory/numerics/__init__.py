"""Shared numerics: the computations that more than one part of the book uses. Import the module you need
(``from dltheory.numerics.curvature import hvp``); this package imports nothing itself, so a chapter's cache key
covers only the modules it really uses.

* :mod:`.validate`: the one argument validator (``check_int``, ``check_positive``, ``check_nonnegative``);
* :mod:`.seeding`: seeding and CPU determinism;
* :mod:`.fitting`: log-log slopes;
* :mod:`.curvature`: Hessian-vector products, Lanczos, the sharpness tracker;
* :mod:`.pergrad`: per-example gradients in one batched call, and minibatch gradients as count matrices;
* :mod:`.optimizers`: SGD, RMSprop and Adam as pure update functions;
* :mod:`.kernels`: arc-cosine kernels and the ReLU NTK Gram matrix;
* :mod:`.mlp`: the flat-parameter MLP and square loss;
* :mod:`.transformer`: the book's one transformer (weights settable by name, replicas side by side);
* :mod:`.data`: data sets that ship with a package (scikit-learn digits);
* :mod:`.figures`: the book's one figure style (page-width sizes, legible fonts, a colour-blind-safe palette).
"""
