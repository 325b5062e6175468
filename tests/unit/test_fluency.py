"""n-gram entropy fluency (Meng et al. 2022): pure functions, values checked by hand."""

import math

import pytest

from keditlab.evaluate.fluency import fluency, ngram_entropy, text_fluency, words


def test_words_are_lowercased_with_punctuation_split():
    assert words("The Capital, of FRANCE's") == ["the", "capital", ",", "of", "france's"]


def test_ngram_entropy_by_hand():
    # bigrams of a b a b: (a,b) (b,a) (a,b) -> p = 2/3, 1/3
    expected = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    assert ngram_entropy(["a", "b", "a", "b"], 2) == pytest.approx(expected)
    # four distinct bigrams -> uniform over 4 -> 2 bits
    assert ngram_entropy(list("abcde"), 2) == pytest.approx(2.0)
    # one repeated bigram only -> 0 bits
    assert ngram_entropy(["x", "x", "x"], 2) == 0.0


def test_too_short_text_has_zero_entropy():
    assert ngram_entropy(["only"], 2) == 0.0
    assert text_fluency("") == 0.0


def test_text_fluency_is_the_weighted_mean():
    # "a b c d e": 4 distinct bigrams (2 bits), 3 distinct trigrams (log2 3 bits)
    expected = (2 / 3 * 2.0 + 4 / 3 * math.log2(3)) / 2
    assert text_fluency("a b c d e") == pytest.approx(expected)


def test_repetition_scores_lower_than_varied_text():
    varied = "Paris is the capital of France and home to the Louvre museum on the river Seine."
    looping = "Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris"
    two_loop = "the city is the city is the city is the city is the city is"
    assert text_fluency(looping) < text_fluency(two_loop) < text_fluency(varied)


def test_case_fluency_is_mean_over_generations():
    a, b = "a b c d e", "x x x x"
    assert fluency([a, b]) == pytest.approx((text_fluency(a) + text_fluency(b)) / 2)
    assert fluency([]) is None


def test_weights_must_match_ns():
    with pytest.raises(ValueError):
        text_fluency("a b c", ns=(2,), weights=(1.0, 2.0))
