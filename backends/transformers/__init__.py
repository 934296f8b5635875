"""Qwen3-Omni in this process through transformers.

Import arrows point one way, from the engine down to the model:

- ``backend.py``: the Transformers engine (the thread, the reply job). Nothing in this package imports it.
- ``model.py``: ``OmniModel``, the weights and what serves them; the Transformers engine is one, and the hybrid's
  talker side holds one. It imports the modules below, never an engine or ``engine_thread``.
- ``loading.py`` (loading a checkpoint) over ``options.py`` (``TransformersOptions``, which imports only ``media``).
- ``speech.py``, ``thinker_decoder.py``, ``talker_decoder.py``, ``vocoder.py``, ``encoder_graphs.py``,
  ``encoder_cache.py``, ``cuda_graphs.py``, ``kernels/``: the parts, each importing only parts below it.
- ``engine_thread.py``, ``incremental_text.py``: the engines' own helpers (the hybrid's thread too).
"""
