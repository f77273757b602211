"""The model's plumbing around the lab's cells, and the ablation's variants.

``model`` (``build_model``: the trunk, a modification's pooling or head, then notebook 02's ``ClipImageModel``),
``loss`` (the extra losses and negatives; every loss takes the same four arguments), ``metrics`` (the checks and
chunking around notebook 03's Recall@K cells), ``flags`` (the variant records, their registry and parsing: ``Variant``,
``register``, ``Recipe``), ``identity`` (a run's identity), ``variants`` (the built-in modifications, one record each,
registered when this package is imported), ``bank`` (the ``bank`` record's caption bank), ``embed`` (AMP encoding of
images). Used by the store, training (02) and evaluation (03); imports only ``helpers.data`` and ``helpers.core``.
"""

from . import variants as _builtins  # noqa: F401  (registers the built-in records before any variant is parsed)
