"""Candidate retrievers. Each takes ``(queries, corpus, k)`` and returns ranked ``(doc_id, score)`` lists."""
