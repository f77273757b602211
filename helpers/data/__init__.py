"""Notebook 01: COCO 2014 to splits, a prepared image cache and cached caption embeddings.

``acquire`` and ``download`` (the data sources), ``coco`` (captions), ``splits`` (the Karpathy 5k protocol; the
id lists sit in this folder), ``image_cache``, ``text_tower`` (CLIP's frozen text encoder), ``dataset`` (the
``Dataset`` over both caches), ``prepare`` (01's steps), ``pairs`` (01's integrity grid), ``synthetic`` (the
offline test data). Imports only ``helpers.core``.
"""
