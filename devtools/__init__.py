"""Developer tools: the benchmark and the Bot API test double.

Runtime code (``botplatform``, ``workflows``, ``users``) never imports this package
(``tests/test_devtools_apart.py`` checks it), so production images can leave it out.
"""
