"""The HTTP side of the job server: Prometheus ``/metrics``, a JSON API and a live dashboard.

Off unless ``twistd gearman --http ENDPOINT`` asks for it. Everything here reads the core's
tables and counters when a request (or the once-a-second sampler) asks; nothing runs per job.
"""
