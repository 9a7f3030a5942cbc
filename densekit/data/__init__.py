"""Data layer: BEIR-format retrieval datasets and training files, with errors that name file, line and field."""

from densekit.data.beir import BeirDataset, doc_text, load_beir, load_corpus, load_qrels, load_queries
from densekit.data.training import Negative, TrainingRecord, read_training_records, to_hf_dataset

__all__ = [
    "BeirDataset", "doc_text", "load_beir", "load_corpus", "load_qrels", "load_queries",
    "Negative", "TrainingRecord", "read_training_records", "to_hf_dataset",
]
