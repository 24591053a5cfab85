"""One adapter per client API (SPEC §12): parse a body into :mod:`app.conversation`, render
answers, stream events and errors back in that API's own shape."""
