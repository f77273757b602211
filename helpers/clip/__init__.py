"""What the lab grades: the model (2.2), the loss (2.3) and the metric (2.4), plus the ablation's variants.

``model`` (ResNet50 + projection head), ``loss`` (symmetric InfoNCE), ``metrics`` (Recall@K), ``variants``
(each modification under its flag), ``embed`` (AMP encoding of images). Used by training (02) and
evaluation (03); imports only ``helpers.data`` and ``helpers.core``.
"""
