"""The pieces of ``harness/bench``: one module per step of the benchmark.

- ``deps``     installs the Debian packages the benchmark needs when they are missing;
- ``machine``  describes the machine the figures come from;
- ``site``     generates the document root every server serves;
- ``servers``  starts and stops the servers under test (the stages, nginx, Apache, Python);
- ``client``   a raw-socket HTTP/1.0 client that checks every byte count, and the testcases;
- ``ab``       calibrates and runs ApacheBench and reads its output;
- ``ctxsw``    counts a server's context switches (taskstats, or /proc per thread);
- ``flood``    the idle-connection flood: threads and memory from /proc, admitted requests;
- ``statuscost`` stages 3 and 4 with and without ``--status`` (a poller as the scoreboard);
- ``spans``    request timelines: connect, first and last byte per client, drawn (also used
               by ``timeline.py``, ``shaped.py`` and ``tests/test_concurrency.py``);
- ``micro``    builds and runs the Google Benchmark micro-benchmarks of the parser;
- ``report``   CSV files, plots and summary.md.
"""
