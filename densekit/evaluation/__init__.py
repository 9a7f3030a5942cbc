"""Retrieval metrics (trec_eval semantics), TREC run files and BEIR evaluation of models or indexes."""
