"""mlrun's version: the one place it is written (`mlrun --version` adds `git describe` in a checkout).

Its own module, not engine/__init__.py: recipes hash that file as a source, and a version bump must
not rebuild their entries.
"""
__version__ = "0.15.0"
