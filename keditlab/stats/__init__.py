"""Statistics of a model's activations over a corpus, cached on disk (see :mod:`keditlab.stats.covariance`)."""

from keditlab.stats.corpus import MODEL_SAMPLES, Corpus, CorpusError, load_corpus
from keditlab.stats.covariance import (
    CovarianceProvider, CovarianceStats, cache_dir, corpus_path, fingerprint_of, layer_covariance, layer_covariances,
    model_fingerprint, statistics_path,
)

__all__ = [
    "MODEL_SAMPLES",
    "Corpus",
    "CorpusError",
    "CovarianceProvider",
    "CovarianceStats",
    "cache_dir",
    "corpus_path",
    "fingerprint_of",
    "layer_covariance",
    "layer_covariances",
    "load_corpus",
    "model_fingerprint",
    "statistics_path",
]
