"""Reference WSGI apps the listener's ingest is measured against, under the same gunicorn settings."""
