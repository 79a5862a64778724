"""Reproducible throughput and latency benchmark of the pipeline: `python -m bench.run --quick`."""
