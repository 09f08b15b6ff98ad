"""Transfer (``chapters/transfer/``): where skills live and how they transfer -- skill localization, transfer across
modalities, progressive subnetworks, parsing in transformers, transformers as explicit programs.

* :mod:`.grafting`: *Skill localization by grafting* (``skill-localization.md``; Panigrahi et al. 2023): the graft,
  movement / random / path-integrated first-order grafts, the reference's sigmoid-relaxed mask and its hand-computed
  gradient, a sparse-activation MLP pretrained on digits and fine-tuned through frozen label-word logits, with
  replicas batched side by side.
* :mod:`.modalities`: the two-modality running-sum toy of *From simple to hard, across modalities*
  (``simple-to-hard.md``; Park et al. 2025): the Mix+ training family with its bridges (none, image-via-text
  transcription, paired alignment loss), mixes x seeds as replicas trained side by side, gradient alignment on the
  shared core, and the one-step Taylor check.
* :mod:`.pcfg`: *Do transformers parse while predicting the masked word?* (``parsing-pcfg.md``; Zhao et al. 2023):
  CNF grammars (toy English with agreement and PP attachment, random ambiguous grammars), exact inside-outside over
  any number type against brute-force derivation trees, batched torch inside with outside by autograd,
  length-conditioned sampling, n-gram baselines, span probes and CKY parsing.
* :mod:`.programs`, :mod:`.eliza`: *Transformers as programs* (``transformers-as-programs.md``; Panigrahi et al. 2024,
  Friedman et al. 2024): TinT's linear forward/backward/descent as attention over prefix tokens (exact with linear
  attention, second-order in the temperature on the shared softmax transformer), the first-order layer-norm/GeLU
  backward, the stop-gradient through attention, one-step GD against a trained linear self-attention layer for
  in-context regression; ELIZA template matching and the cycle counter written into the shared transformer,
  ELIZA-style conversations, a trained transformer and the cycling counterfactual.
* :mod:`.raptr`: *Progressive subnetworks (RaPTr)* (``progressive-subnetworks.md``; Panigrahi et al. 2024): the
  expected-path identity and the scale L/p, the transition drop, a batched pre-LN residual MLP whose replicas are the
  full / equal-FLOPs / RaPTr (three scalings) / stacking / layer-dropping arms, a masked Adam that leaves skipped
  blocks untouched, and a FLOP ledger.

A chapter imports the part's modules from here (``from dltheory.transfer import modalities``); each module's docstring
points back to its chapter and paper. Parts use the shared numerics (the shared transformer is
:mod:`dltheory.numerics.transformer`) and never import another part.
"""
