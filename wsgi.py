"""The WSGI entry point: ``gunicorn wsgi:app``."""
from listener import create_app

app = create_app()
