"""The gunicorn entry point: ``gunicorn -c config/gunicorn.conf.py app.wsgi:app``.

Imported in each worker after gevent's monkey patching (the config does not preload), so
every client and pool the app makes is gevent-aware and private to the worker.
"""

from app import create_app

app = create_app()
