"""ROUGE-L: parity with rouge_score, pruning that never changes an answer, CJK, greedy dedup."""

from __future__ import annotations

import random
import sys

import pytest

from datagen import rouge
from datagen.errors import ConfigError
from datagen.rouge import RougePool, greedy_dedup, rouge_l, tokenize

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

# Frequent words (so tokens repeat within a sentence and posting lists grow long), stem families
# (running/runs/ran), digits, hyphens, apostrophes, accented and odd-case letters that rouge_score splits.
WORDS = (
    "the the the a a of of to and in is for on with".split()
    + "write writes writing written poem poems story stories explain explained explaining".split()
    + "run running runs ran quickly quick connection connected connecting happiness happy".split()
    + "organization organize generously data list lists listing summarize summary the".split()
    + [
        "3",
        "42",
        "2023",
        "x1",
        "covid-19",
        "e-mail",
        "don't",
        "it's",
        "U.S.A.",
        "café",
        "naïve",
        "GPT-4",
        "Python",
        "HTTP",
        "C++",
        "über",
        "İstanbul",
        "Kelvin",
        "\u212a",
        "straße",
        "ﬁle",
        "１２３",
    ]
)
PUNCT = ["", "", "", ",", ".", "!", "?", ";", ":", "...", ")", '"', " -"]
CJK_PHRASES = [
    "请写一首",
    "关于秋天",
    "的短诗",
    "解释",
    "量子计算",
    "的基本原理",
    "东京の天気",
    "を教えて",
    "서울의",
    "날씨를",
]


def sentence(rng: random.Random, lo: int = 0, hi: int = 18) -> str:
    words = []
    for _ in range(rng.randint(lo, hi)):
        word = rng.choice(WORDS)
        word = rng.choice([word, word, word.title(), word.upper()])
        words.append(word + rng.choice(PUNCT))
    return rng.choice([" ", " ", "  ", "\t", "\n"]).join(words)


def variant(rng: random.Random, text: str, edits: int | None = None) -> str:
    """`text` after a few word edits, so it shares long subsequences with the original."""
    words = text.split()
    for _ in range(rng.randint(0, 4) if edits is None else edits):
        op = rng.randrange(4)
        i = rng.randrange(len(words) + 1)
        if op == 0 or not words:
            words.insert(i, rng.choice(WORDS))
        elif op == 1:
            del words[min(i, len(words) - 1)]
        elif op == 2:
            words[min(i, len(words) - 1)] = rng.choice(WORDS)
        elif len(words) > 1:
            j = rng.randrange(len(words) - 1)
            words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def random_pairs(seed: int, count: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = [("", ""), ("", "a poem"), ("write a poem", ""), ("...", "!!!"), ("Poem.", "poem")]
    while len(pairs) < count:
        a = sentence(rng)
        kind = rng.random()
        if kind < 0.45:
            b = variant(rng, a)
        elif kind < 0.65:
            words = a.split()
            rng.shuffle(words)
            b = " ".join(words)
        elif kind < 0.75:
            b = rng.choice(["", " ", "?!", sentence(rng, 0, 2)])
        else:
            b = sentence(rng)
        pairs.append((a, b) if rng.random() < 0.5 else (b, a))
    return pairs


# --- parity with rouge_score -------------------------------------------------------------------------------


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_l_equals_rouge_score_fmeasure(use_stemmer):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    pairs = random_pairs(seed=1 + use_stemmer, count=1500)
    nontrivial = 0
    for a, b in pairs:
        expected = scorer.score(a, b)["rougeL"].fmeasure
        got = rouge_l(a, b, use_stemmer=use_stemmer)
        assert abs(got - expected) <= 1e-9, (a, b, got, expected)
        assert got == expected, (a, b)  # the same float arithmetic, so not just close: equal
        nontrivial += 0 < expected < 1
    assert nontrivial > 800  # the pairs exercise partial overlaps, not just 0 and 1


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_tokenize_equals_rouge_score_tokenizer_on_non_cjk_text(use_stemmer):
    theirs = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)._tokenizer
    rng = random.Random(3)
    texts = [sentence(rng) for _ in range(500)] + [
        "İSTANBUL \u212aelvin ŒUVRE straße ﬁle",
        "tab\tnew\nline\r\n",
        "１２３ full-width",
        "emoji 😀 ok",
        "a_b-c.d/e\\f",
        "",
        "   ",
        "Running runs RAN; connections.",
    ]
    for text in texts:
        assert tokenize(text, use_stemmer) == theirs.tokenize(text), text


def test_rouge_l_reproduces_rouge_score_rounding_not_the_plain_ratio():
    # LCS 6 of 6 and 7 tokens: rouge_score's 2PR/(P+R) is 0.923076923076923, the plain 2*6/13 is not.
    assert rouge_l("Write a poem about the sea.", "write a short poem about the sea") == 0.923076923076923
    assert 2 * 6 / 13 == 0.9230769230769231  # the naive formula differs in the last bit


# --- CJK ---------------------------------------------------------------------------------------------------


def test_chinese_near_duplicates_are_caught_where_rouge_score_sees_nothing():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    original, near, distinct = "请写一首关于秋天的短诗。", "请写一首关于秋天的诗", "解释量子计算的基本原理。"
    assert rouge_l(original, near) == pytest.approx(2 * 10 / (11 + 10))  # 10 shared characters, in order
    assert rouge_l(original, near) >= 0.7
    assert rouge_l(original, distinct) == pytest.approx(2 * 1 / (11 + 11))  # only 的
    # rouge_score's tokenizer deletes every CJK character: both pairs score 0, the duplicate slips through.
    assert scorer.score(original, near)["rougeL"].fmeasure == 0
    assert scorer.score(original, distinct)["rougeL"].fmeasure == 0
    kept, dropped = greedy_dedup([original, distinct, near])
    assert kept == [0, 1] and dropped == [(2, 0, rouge_l(original, near))]


def test_japanese_and_korean_are_per_character():
    assert tokenize("東京の天気をカタカナで") == list("東京の天気をカタカナで")
    assert rouge_l("東京の天気を教えてください", "東京の明日の天気を教えてください") >= 0.7
    assert tokenize("서울의 날씨") == ["서", "울", "의", "날", "씨"]
    assert rouge_l("서울의 날씨를 알려주세요", "서울의 내일 날씨를 알려주세요") >= 0.7


def test_mixed_chinese_english_keeps_latin_words_whole():
    assert tokenize("用Python写一个HTTP服务器, port 8080!") == [
        "用",
        "python",
        "写",
        "一",
        "个",
        "http",
        "服",
        "务",
        "器",
        "port",
        "8080",
    ]
    assert tokenize("Running 测试", use_stemmer=True) == ["run", "测", "试"]
    a, b = "用Python写一个HTTP服务器", "用 python 写一个简单的 HTTP 服务器"
    assert rouge_l(a, b) == pytest.approx(2 * 9 / (9 + 12))
    assert rouge_l(a, "用Java写一个HTTP客户端") == pytest.approx(2 * 5 / (9 + 9))


# --- the pool equals brute force ---------------------------------------------------------------------------


def pool_texts(rng: random.Random, size: int) -> list[str]:
    texts: list[str] = []
    for _ in range(size):
        r = rng.random()
        if texts and r < 0.4:
            texts.append(variant(rng, rng.choice(texts)))
        elif r < 0.5:
            texts.append(rng.choice(["", "?!"]) if rng.random() < 0.3 else "".join(rng.sample(CJK_PHRASES, 3)))
        else:
            texts.append(sentence(rng, 1, 20))
    return texts


def queries(rng: random.Random, texts: list[str], count: int) -> list[str]:
    out = ["", "?", "zzz unseen words only", "the the the of a"]
    for _ in range(count):
        r = rng.random()
        if texts and r < 0.6:
            out.append(variant(rng, rng.choice(texts), edits=rng.randint(0, 3)))
        elif r < 0.7:
            out.append("".join(rng.sample(CJK_PHRASES, 3)))
        else:
            out.append(sentence(rng))
    return out


def brute_top_k(pool: list[str], query: str, k: int, use_stemmer: bool = False) -> list[tuple[int, float]]:
    scores = [(i, rouge_l(query, text, use_stemmer=use_stemmer)) for i, text in enumerate(pool)]
    return sorted(scores, key=lambda item: (-item[1], item[0]))[:k]


def check_against_brute_force(pool: RougePool, texts: list[str], query: str, use_stemmer: bool = False) -> int:
    """Every query method equals brute force, at thresholds that sit exactly on and around real scores."""
    everything = brute_top_k(texts, query, len(texts), use_stemmer)
    for k in (1, 3, 10, len(texts) + 5):
        assert pool.top_k(query, k) == everything[:k], (query, k)
    assert pool.max_score(query) == ((everything[0][1], everything[0][0]) if texts else (0.0, None))
    scores = sorted({s for _, s in everything})
    thresholds = {0.0, 0.3, 0.5, 0.7, 0.9, 1.0, 1.5}
    for s in scores[-4:]:  # the best scores, exactly and one ulp-ish either side
        thresholds |= {s, s - 1e-12, s + 1e-12}
    checked = 0
    for t in sorted(thresholds):
        hits = [(i, s) for i, s in everything if s >= t]
        assert pool.is_near_duplicate(query, t) == bool(hits), (query, t)
        best = min(hits, key=lambda item: (-item[1], item[0])) if hits else None
        assert pool.find_duplicate(query, t) == best, (query, t)
        checked += 1
    return checked


@pytest.mark.parametrize("seed", range(6))
def test_pool_queries_equal_brute_force(seed):
    rng = random.Random(100 + seed)
    texts = pool_texts(rng, rng.choice([0, 1, 5, 40, 150, 300]))
    pool = RougePool(texts)
    assert len(pool) == len(texts) and all(pool[i] == t for i, t in enumerate(texts))
    checked = sum(check_against_brute_force(pool, texts, q) for q in queries(rng, texts, 40))
    assert checked > 40 * 7


def test_pool_growing_between_queries_equals_brute_force():
    rng = random.Random(7)
    pool, texts = RougePool(), []
    for text in pool_texts(rng, 120):
        for q in queries(rng, texts, 2)[-2:]:
            check_against_brute_force(pool, texts, q)
        assert pool.add(text) == len(texts)
        texts.append(text)


def test_pool_with_stemming_equals_brute_force():
    rng = random.Random(8)
    texts = pool_texts(rng, 120)
    pool = RougePool(texts, use_stemmer=True)
    for q in queries(rng, texts, 25):
        check_against_brute_force(pool, texts, q, use_stemmer=True)


def test_near_threshold_pairs_are_decided_exactly_at_point_seven():
    # 7 of 10 tokens in common, lengths 10 and 10: F = 0.7 exactly as rouge_score computes it.
    base = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    near = "alpha beta gamma delta epsilon zeta eta one two three"
    score = rouge_scorer.RougeScorer(["rougeL"]).score(base, near)["rougeL"].fmeasure
    assert rouge_l(base, near) == score
    pool = RougePool([base])
    assert pool.is_near_duplicate(near, score) and not pool.is_near_duplicate(near, score + 1e-12)
    assert pool.is_near_duplicate(near, 0.7) == (score >= 0.7)


def test_pool_falls_back_to_int_lists_past_the_code_point_range(monkeypatch):
    # A vocabulary bigger than Unicode would not fit in str code points; force that with a tiny limit.
    monkeypatch.setattr(rouge, "_MAX_CODE_POINT", 12)
    rng = random.Random(9)
    texts = pool_texts(rng, 80)
    pool = RougePool(texts)
    assert any(isinstance(s, list) for s in pool._seqs) and any(isinstance(s, str) for s in pool._seqs)
    for q in queries(rng, texts, 20):
        check_against_brute_force(pool, texts, q)


def test_empty_pool_and_empty_query():
    empty = RougePool()
    assert len(empty) == 0
    assert empty.max_score("anything") == (0.0, None)
    assert empty.top_k("anything") == []
    assert not empty.is_near_duplicate("anything", 0.0)
    assert empty.find_duplicate("anything", 0.0) is None
    pool = RougePool(["b c", "a"])
    assert pool.max_score("") == (0.0, 0)  # like np.argmax over an all-zero row
    assert pool.top_k("...", 5) == [(0, 0.0), (1, 0.0)]
    assert pool.is_near_duplicate("", 0.0) and not pool.is_near_duplicate("", 0.01)


# --- greedy dedup ------------------------------------------------------------------------------------------


def test_greedy_dedup_keeps_the_first_of_each_group_and_names_the_best_kept_match():
    texts = [
        "Write a poem about the sea.",  # 0 kept
        "Name three primary colors.",  # 1 kept
        "Write a short poem about the sea!",  # 2 dup of 0
        "name THREE primary colours",  # 3 dup of 1 (0.75)
        "Explain how vaccines work.",  # 4 kept
        "Write a poem about the sea",  # 5 dup of 0 (1.0), not of 2: 2 was dropped
        "explain how vaccines work in detail",  # 6 dup of 4
    ]
    kept, dropped = greedy_dedup(texts, 0.7)
    assert kept == [0, 1, 4]
    assert [(i, j) for i, j, _ in dropped] == [(2, 0), (3, 1), (5, 0), (6, 4)]
    assert [s for _, _, s in dropped] == [rouge_l(texts[i], texts[j]) for i, j, _ in dropped]
    assert dropped[2][2] == 1.0


def test_greedy_dedup_equals_brute_force():
    rng = random.Random(11)
    texts = pool_texts(rng, 250)
    for threshold in (0.5, 0.7, 0.9):
        expected_kept, expected_dropped = [], []
        for i, text in enumerate(texts):
            scores = [(j, rouge_l(text, texts[j])) for j in expected_kept]
            best = min(scores, key=lambda item: (-item[1], item[0]), default=None)
            if best and best[1] >= threshold:
                expected_dropped.append((i, best[0], best[1]))
            else:
                expected_kept.append(i)
        assert greedy_dedup(texts, threshold) == (expected_kept, expected_dropped)
        assert 0 < len(expected_dropped) < len(texts)


def test_stemming_without_nltk_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk.stem", None)
    rouge._porter_stemmer.cache_clear()
    rouge._stem.cache_clear()
    try:
        with pytest.raises(ConfigError, match="pip install nltk"):
            tokenize("connections", use_stemmer=True)
    finally:
        rouge._porter_stemmer.cache_clear()
        rouge._stem.cache_clear()
