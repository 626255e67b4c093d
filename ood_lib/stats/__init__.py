"""Statistics on scores: the OOD metrics (:mod:`.metrics`) and the paired bootstrap (:mod:`.paired`).
"""
