"""Backend-specific helpers for tests: gradients need each framework's own autodiff."""

from __future__ import annotations

import keras
import numpy as np


def value_and_grad(fn, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns fn(x) and d sum(fn(x)) / dx as numpy arrays, on the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = fn(x)
            total = tf.reduce_sum(tf.cast(y, "float32"))
        return keras.ops.convert_to_numpy(y), tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        y = fn(jnp.asarray(x))
        grad = jax.grad(lambda v: jnp.sum(fn(v).astype("float32")))(jnp.asarray(x))
        return np.asarray(y), np.asarray(grad)
    if backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        y = fn(x)
        y.float().sum().backward()
        return y.detach().cpu().numpy(), x.grad.cpu().numpy()
    raise NotImplementedError(backend)
