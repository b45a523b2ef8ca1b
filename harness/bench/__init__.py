"""The benchmarks: the stages against nginx and Apache (compare), question 5 through a
simulated network (shaped), request timelines (timeline); bench.lib holds their pieces.
Run as ``/usr/bin/python3 harness/bench COMMAND`` (see __main__.py)."""
