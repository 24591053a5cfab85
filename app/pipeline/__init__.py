"""One request's trip, a module per stage, entered once each and in order.

=========  ==============================  ===================================================
stage      module                          what it does
=========  ==============================  ===================================================
parse      ``parse``                       the body checked and read into a ``ChatRequest``
                                           (with :mod:`app.client_apis` for each API's shape)
decide     ``decide``                      session, route, pin -> the decided model and its
                                           ranked fallbacks (``Gateway.decide``)
attempt    ``attempt``, ``failover``,      the chain over the candidates; per try it plans
           ``model_health``                and sends
plan       ``plan``, ``passthrough``,      for one candidate: the byte-level pass-through or
           ``streams``                     a translated call, with its answer and stream
                                           shapers
send       ``relay``, ``stream_integrity``  ONE relay for every plan: post, read or stream,
                                           integrity check, observers told, release
render     :mod:`app.client_apis`          events and errors in the client's shape (called
                                           by the plan's shapers)
=========  ==============================  ===================================================
"""
