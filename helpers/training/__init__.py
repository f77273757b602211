"""Notebook 02: the resumable trainer and the run folder it writes.

``train`` (the ``Trainer``: ``train_one_epoch`` in one screen, the one entry point ``train.train``), ``train_data``,
``optim``, ``bank``, ``checkpoint``, ``recovery``, ``validation``, ``distributed``, ``curves``, ``runs`` (the run
folder: names, readers, the best-epoch choice) and ``runlock`` (one writer per run folder).
"""
