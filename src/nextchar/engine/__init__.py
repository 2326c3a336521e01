"""The prediction runtime: one contract (base.Predictor), one file per backend, and load() on top.

    from nextchar import engine
    p = engine.load("default")          # a folder, or a shipped model's name
    p.topk("Happy New Yea", k=3)        # [(char, prob), ...] best first
    s = p.session(); s.topk("Happy Ne")  # incremental typing, same answers as topk

The engine imports nothing above it (jobs, evaluation, serving, the study, the CLI), and no backend's runtime
until a folder needs it: an ONNX or n-gram prediction never imports torch.
"""

from nextchar.engine.base import START, Predictor, Session, prepare_prefix, rank, window, window_start
from nextchar.engine.load import BACKENDS, load, resolve

__all__ = ["BACKENDS", "START", "Predictor", "Session", "load", "prepare_prefix", "rank", "resolve", "window",
           "window_start"]
