"""One module per scenario of issue 9; each returns a JSON-ready dict."""
