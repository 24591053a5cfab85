"""The Flask edge: the only code that touches ``flask.request`` or ``current_app``.

``api`` (the client endpoints: chat completions, Messages, Responses, routing-only, health,
metrics), ``admin`` (the admin API), ``auth`` (client and admin keys), ``request_body``
(reading a body within its limits) and ``request_log`` (the access line and the JSON log
format). Everything below this package takes plain arguments and runs without Flask.
"""
