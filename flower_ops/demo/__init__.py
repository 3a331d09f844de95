"""``flower-ops demo``: a self-contained Flower Ops installation with traffic.

``app`` is the demo Celery app (realistic automation tasks and a beat
schedule); ``runner`` starts embedded Redis/PostgreSQL, a worker, beat, the
sync worker and the monitor, and stops them all on Ctrl-C.
"""
