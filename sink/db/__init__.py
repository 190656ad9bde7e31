"""Postgres: connecting, classifying errors, migrations, the embedded server, named queries."""
