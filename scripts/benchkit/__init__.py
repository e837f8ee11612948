"""Helpers shared by the benchmark scripts (scripts/bench_portal.py, scripts/bench_hostile_uploads.py).

They start the portal's processes on loopback (`stack`: their environment, manage.py, gunicorn and a Celery
worker, the PostgreSQL database and Redis queue), talk to its API (`api`: multipart bodies, a small client,
waiting until it answers; `workload`: uploads and batches waited for until classified), read what its
processes cost from /proc (`procs`: process trees, CPU seconds, RSS and its peak) and print the figures
(`report`: tables, percentiles). Import them as `from benchkit import ...`: a script's own folder is the
first entry of sys.path.
"""
