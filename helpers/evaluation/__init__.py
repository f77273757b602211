"""Notebook 03: Recall@K of a trained run, qualitative retrievals, zero-shot CLIP, the query widget.

``evaluate``, ``qualitative``, ``zero_shot``, ``widget``.
"""
