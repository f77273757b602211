"""Notebook 02: the training step and the resumable driver around it.

``step`` (``training_step``: forward, loss, backward, optimizer step; the lesson, replaceable by the student's),
``train`` (the ``Trainer`` driver and the one entry point ``train.train``), ``state`` (``RunState``: what the
checkpoint holds and recovery returns), ``epoch`` (one epoch's loader, meter and logged points), ``train_data``,
``optim``, ``checkpoint`` (seeds and RNG states), ``recovery``, ``validation``, ``distributed``. The run folders
it writes belong to ``helpers.store``.
"""
