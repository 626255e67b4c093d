"""What the study finds: its claims and the rules that decide them (:mod:`.claims`, :mod:`.decide`,
:mod:`.mechanism`), the study of one benchmark (:mod:`.study`), the analyses behind the chapters
(:mod:`.analysis`, :mod:`.explain`, :mod:`.depth`, :mod:`.increment`, :mod:`.paired_tables`, :mod:`.roc`), display
names (:mod:`.labels`) and published numbers (:mod:`.reference`).
"""
