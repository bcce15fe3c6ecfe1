"""Taggers: per-document attributes (scores, counts, spans), written beside the documents."""
