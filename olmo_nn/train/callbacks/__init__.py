"""Trainer callbacks, one small class per file (see :mod:`olmo_nn.train.callbacks.base`)."""
