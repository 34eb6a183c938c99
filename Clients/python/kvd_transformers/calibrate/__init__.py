"""Calibration tools that make the per-model files kvd's methods read.

* ``python -m kvd_transformers.calibrate.headkv``: HeadKV-R2 head-importance scores
  (``{"layer-head": [score, ...]}``) from needle questions that need reasoning over a fact.
* ``python -m kvd_transformers.calibrate.kvsharer``: a KVSharer layer alias map ("layer:owner,...")
  from kvd's RankLayers and the model's next-token KL within a budget (or the paper's hidden-state
  cosine, ``--accept cosine``).
* ``python -m kvd_transformers.calibrate.kvsharer_curve``: layers shared vs next-token KL of such
  maps on held-out text.

All run offline (``HF_HUB_OFFLINE=1``). The first two calibrate on text that ships with Python
(``pydoc_data.topics``), show a progress bar with an ETA on stderr and can resume an interrupted run
(``--resume``); the curve reads the license corpus the quality report uses.
See ``docs/CALIBRATION.md``.
"""
