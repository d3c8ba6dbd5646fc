"""The head of the small benchmark-like recipe that the sweep and runs tests build on (each adds its own)."""

APP_HEAD = """\
tags: app bench
cache: false
inputs:
  mode: {default: performance, choices: [accuracy, performance]}
  scenario: {default: Offline, choices: [Offline, SingleStream]}
  batch_size: {type: int, default: 1}
"""
