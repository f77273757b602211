"""Notebooks 04 and 05: the ablation study and the lab report, both assembled from the artifacts.

``ablation``, ``report``.
"""
