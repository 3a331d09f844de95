"""One harness for the tests, the benchmarks and the hardening suites.

Real services and real processes, each concept in its own module:

* ``services``     — Redis and PostgreSQL for a session (the machine's or embedded);
* ``processes``    — Celery workers, the monitor and the sync worker as subprocesses;
* ``stack``        — a worker and a monitor (with a database, also the sync
  worker) started, waited for and stopped together, and an API client;
* ``inprocess``    — the sync worker on a thread of the calling process;
* ``executions``   — ``automation.job_executions`` rows and audit entries;
* ``events``       — Celery event dicts for feeding Flower's state directly;
* ``tcp_proxy``    — a loopback proxy that really cuts connections;
* ``demo``         — ``flower-ops demo`` with its whole process tree tracked;
* ``process_tree`` — descendants of a process, read from ``/proc``;
* ``settings``     — the short intervals the product runs with under test;
* ``waiting``      — ``wait_for``, the one way to poll;
* ``paths``        — the repository root, for child processes;
* ``apps``         — the Celery apps the test workers and monitors run.

Not shipped: ``setup.cfg`` packages only ``flower_ops`` and ``sync_worker``.
Child processes find this package through ``PYTHONPATH`` set to the repository
root (``testing.paths.REPO_ROOT``).
"""
