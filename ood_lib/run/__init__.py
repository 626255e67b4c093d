"""Running a benchmark: the configuration (:mod:`.config`), feature extraction and its cache
(:mod:`.features`, :mod:`.distributed` under ``torchrun``), the runner (:mod:`.evaluate`), its
results table (:mod:`.results`), what each path costs (:mod:`.cost`) and the machine (:mod:`.envinfo`).
"""
