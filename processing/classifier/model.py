"""The statistical half of the default classifier: TF-IDF over word 1-2-grams and character 3-5-grams (within word
boundaries) of subject + body + structural tokens, a multinomial logistic regression, and temperature scaling fitted
on out-of-fold logits (so the probabilities are calibrated, not the training fit's overconfidence).

Training needs scikit-learn; prediction needs only NumPy: the fitted model is exported to `model.json` +
`model.npz` (vocabularies, idf, coefficients, temperature), loaded once per process, and scored here with the same
analyzers training used (they are passed to scikit-learn as callables, so both sides tokenise identically)."""

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from processing.parsing import ParsedEmail

ARTIFACT_DIR = Path(__file__).with_name("artifact")
WORD_CHARS = 4000  # text read by the word analyzer; the start of a message says what it is, and this bounds the cost
CHAR_CHARS = 300  # text read by the character analyzer (the costlier one)
# Below this many known word n-grams the probabilities are pulled towards uniform in proportion: a text the model
# barely recognises ("message 0") must not come out 99 % sure, which temperature scaling alone allows.
EVIDENCE_WORDS = 8
PARAMETERS = {"word_ngrams": [1, 2], "char_ngrams": [3, 5], "C": 8.0, "min_df": 1, "word_chars": WORD_CHARS,
              "char_chars": CHAR_CHARS, "max_features": 60000, "evidence_words": EVIDENCE_WORDS}  # fmt: skip
_WORD = re.compile(r"(?u)\b\w\w+\b")
_QUOTE = re.compile(r"^(>.*|On .{0,200} wrote:\s*)$", re.MULTILINE)
_URL = re.compile(r"https?://\S+")
_DIGITS = re.compile(r"\d")


def model_text(parsed: ParsedEmail, tokens: str) -> str:
    """What the model reads: subject, body without quoted history (a reply's quote is the other side's words),
    URLs reduced to their host, digits to 0, and the structural tokens."""
    body = _QUOTE.sub(" zzquoted ", parsed.text[: WORD_CHARS * 2])
    body = _URL.sub(lambda m: " zzurl " + m.group(0).split("/")[2] if m.group(0).count("/") >= 2 else " zzurl ", body)
    return _DIGITS.sub("0", f"{parsed.subject}\n{parsed.subject}\n{body[:WORD_CHARS]}\n{tokens}").lower()


def words_analyze(text: str) -> list[str]:
    words = _WORD.findall(text)
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def chars_analyze(text: str) -> list[str]:
    """Character 3-5-grams within space-padded words (scikit-learn's char_wb), of the first CHAR_CHARS characters."""
    padded = [f" {word} " for word in text[:CHAR_CHARS].split() if not word.startswith("zz")]
    return [word[i : i + n] for word in padded for n in (3, 4, 5) for i in range(len(word) - n + 1)]


@dataclass
class TextModel:
    classes: list[str]
    version: str
    temperature: float
    word_index: dict[str, int]
    char_index: dict[str, int]
    word_idf: np.ndarray
    char_idf: np.ndarray
    coef: np.ndarray  # (features, classes): word features first, then char features
    intercept: np.ndarray

    def probabilities(self, text: str) -> np.ndarray:
        logits = self.intercept.copy()
        offset = len(self.word_index)
        evidence = 0
        for index, idf, grams, base in (
            (self.word_index, self.word_idf, words_analyze(text), 0),
            (self.char_index, self.char_idf, chars_analyze(text), offset),
        ):
            counted = Counter(grams)  # counted in C; the known grams found by a C-level key intersection
            counts = {index[gram]: counted[gram] for gram in counted.keys() & index.keys()}
            if not counts:
                continue
            if base == 0:
                evidence = sum(counts.values())
            columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * idf[columns]
            values /= np.sqrt(values @ values)
            logits += values @ self.coef[columns + base]
        scaled = logits / self.temperature
        scaled -= scaled.max()
        exp = np.exp(scaled)
        probabilities = exp / exp.sum()
        weight = min(1.0, evidence / EVIDENCE_WORDS)
        return probabilities * weight + (1.0 - weight) / len(probabilities)


def model_save(model: TextModel, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "classes": model.classes,
        "version": model.version,
        "temperature": model.temperature,
        "word_vocabulary": sorted(model.word_index, key=model.word_index.__getitem__),
        "char_vocabulary": sorted(model.char_index, key=model.char_index.__getitem__),
        "parameters": PARAMETERS,
    }
    (directory / "model.json").write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    with (directory / "model.npz").open("wb") as handle:  # np.savez adds no timestamps: byte-identical on retrain
        coef = model.coef.astype(np.float32)
        np.savez_compressed(
            handle, word_idf=model.word_idf, char_idf=model.char_idf, coef=coef, intercept=model.intercept
        )


def model_load(directory: Path) -> TextModel:
    meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    with np.load(directory / "model.npz", allow_pickle=False) as arrays:
        coef = arrays["coef"].astype(np.float64)
        return TextModel(
            classes=meta["classes"], version=meta["version"], temperature=float(meta["temperature"]),
            word_index={gram: i for i, gram in enumerate(meta["word_vocabulary"])},
            char_index={gram: i for i, gram in enumerate(meta["char_vocabulary"])},
            word_idf=arrays["word_idf"], char_idf=arrays["char_idf"], coef=coef, intercept=arrays["intercept"],
        )  # fmt: skip


@cache
def model_default() -> TextModel:
    """The shipped model, loaded once per process."""
    return model_load(ARTIFACT_DIR)


def model_version(corpus_bytes: bytes) -> str:
    """A short hash of the corpus and the parameters: the same inputs always give the same version."""
    digest = hashlib.sha256(corpus_bytes + json.dumps(PARAMETERS, sort_keys=True).encode())
    return digest.hexdigest()[:12]
