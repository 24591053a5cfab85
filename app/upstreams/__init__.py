"""One adapter per upstream interface (SPEC §13): build the upstream body and headers from
:mod:`app.conversation`, parse its answers and stream events back into it."""
