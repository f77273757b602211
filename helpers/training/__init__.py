"""Notebook 02: the training step and the resumable driver around it.

The training step itself (forward, loss, backward, optimizer step) is the lab's code, a cell of notebook 02 that the
trainer runs (``cfg.lab.training_step``). Here: ``train`` (the ``Trainer`` driver and the one entry point
``train.train``), ``state`` (``RunState``: what the
checkpoint holds and recovery returns), ``epoch`` (one epoch's loader, meter and logged points), ``train_data``,
``optim``, ``checkpoint`` (seeds and RNG states), ``recovery``, ``validation``, ``distributed``. The run folders
it writes belong to ``helpers.store``.
"""
