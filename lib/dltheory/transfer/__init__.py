"""Transfer (``chapters/transfer/``): where skills live and how they transfer — skill localization, progressive
subnetworks, parsing in transformers. No chapter of this part exists yet; its modules go here.

Parts use the shared numerics (the shared transformer is :mod:`dltheory.numerics.transformer`) and never import
another part.
"""
