"""Developer tools, apart from the library: benchmarks, the fuzzer, the load test, the app server for tests and
the device check. Run from a checkout (``python -m tools.bench``); nothing in models, analysis or app imports them."""
