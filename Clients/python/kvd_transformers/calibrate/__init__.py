"""Calibration tools that make the per-model files kvd's methods read.

* ``python -m kvd_transformers.calibrate.headkv``: HeadKV-R2 head-importance scores
  (``{"layer-head": [score, ...]}``) from needle questions that need reasoning over a fact.
* ``python -m kvd_transformers.calibrate.kvsharer``: a KVSharer layer alias map ("layer:owner,...")
  from kvd's RankLayers and the model's hidden-state check.

Both run offline (``HF_HUB_OFFLINE=1``) on text that ships with Python (``pydoc_data.topics``),
show a progress bar with an ETA on stderr and can resume an interrupted run (``--resume``).
See ``docs/CALIBRATION.md``.
"""
