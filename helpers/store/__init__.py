"""The run store: every run folder ``ARTIFACTS_DIR/runs/<run>/``, its files, and how it is read back.

``runs`` (run names, the files of a run folder, identity checks, the record readers, the best-epoch choice),
``runlock`` (one writer per run folder) and ``curves`` (the learning-curve figure a run's history draws). Below
training (which writes runs) and evaluation and the study (which read them): notebooks 03-05 reach
``helpers.training`` only to start a training.
"""
