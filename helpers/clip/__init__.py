"""What the lab grades: the model (2.2), the loss (2.3) and the metric (2.4), plus the ablation's variants.

``model`` (ResNet50 + projection head), ``loss`` (symmetric InfoNCE; every loss takes the same four arguments),
``metrics`` (Recall@K), ``variants`` (the built-in modifications, one record each), ``bank`` (the ``bank`` record's
caption bank), ``embed`` (AMP encoding of images). Used by training (02) and
evaluation (03); imports only ``helpers.data`` and ``helpers.core``.
"""
