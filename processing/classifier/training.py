"""Training the text model from the shipped corpus (scikit-learn; `manage.py inbound_train` calls `model_train`).

The held-out split is by *group* (one hand-written fragment and all its variants): variants of one fragment never
sit on both sides, so the held-out figures say how the model does on text it has not seen. The shipped artifact is
then fitted on the whole corpus; `evaluation_held_out` refits the train-split model in memory to measure."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processing.classifier import CLASSES
from processing.classifier.corpus.build import CORPUS_PATH
from processing.classifier.model import (
    PARAMETERS,
    TextModel,
    chars_analyze,
    model_save,
    model_text,
    model_version,
    words_analyze,
)
from processing.classifier.rules import structure_read
from processing.parsing import email_parse

HELD_OUT_EVERY = 4  # every 4th group of each class is held out (25 %)


@dataclass
class Example:
    raw: bytes
    text: str
    label: str
    group: int


def corpus_load(path: Path = CORPUS_PATH) -> tuple[list[Example], bytes]:
    content = path.read_bytes()
    examples = []
    for line in content.decode("utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        raw = row["raw"].encode("utf-8")
        parsed = email_parse(raw)
        examples.append(Example(raw, model_text(parsed, structure_read(parsed).tokens()), row["label"], row["group"]))
    return examples, content


def corpus_split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """(train, held_out): per class, every HELD_OUT_EVERY-th group in order of appearance is held out."""
    groups_by_label: dict[str, list[int]] = {}
    for example in examples:
        groups = groups_by_label.setdefault(example.label, [])
        if example.group not in groups:
            groups.append(example.group)
    held = {group for groups in groups_by_label.values() for group in groups[HELD_OUT_EVERY - 1 :: HELD_OUT_EVERY]}
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]


def model_fit(examples: list[Example], version: str) -> TextModel:
    from scipy.optimize import minimize_scalar
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    texts = [e.text for e in examples]
    labels = np.array([CLASSES.index(e.label) for e in examples])
    groups = np.array([e.group for e in examples])
    present = sorted(set(labels.tolist()))

    def vectorizers() -> tuple[TfidfVectorizer, TfidfVectorizer]:
        common = {"sublinear_tf": True, "min_df": PARAMETERS["min_df"], "max_features": PARAMETERS["max_features"],
                  "dtype": np.float64}  # fmt: skip
        return TfidfVectorizer(analyzer=words_analyze, **common), TfidfVectorizer(analyzer=chars_analyze, **common)

    def fit(train_texts: list[str], train_labels: np.ndarray):
        words, chars = vectorizers()
        matrix = hstack([words.fit_transform(train_texts), chars.fit_transform(train_texts)]).tocsr()
        regression = LogisticRegression(C=PARAMETERS["C"], max_iter=3000, class_weight="balanced")
        regression.fit(matrix, train_labels)
        return words, chars, regression

    # temperature from out-of-fold logits: each fold's model scores messages of groups it never saw
    folds = GroupKFold(n_splits=5)
    logits = np.zeros((len(texts), len(present)))
    for train_rows, test_rows in folds.split(texts, labels, groups):
        words, chars, regression = fit([texts[i] for i in train_rows], labels[train_rows])
        test = hstack([words.transform([texts[i] for i in test_rows]), chars.transform([texts[i] for i in test_rows])])
        fold_logits = np.full((len(test_rows), len(present)), -30.0)
        fold_logits[:, [present.index(c) for c in regression.classes_]] = regression.decision_function(test)
        logits[test_rows] = fold_logits
    truth = np.array([present.index(label) for label in labels])

    def loss(temperature: float) -> float:
        scaled = logits / temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return float(-log_probabilities[np.arange(len(truth)), truth].mean())

    temperature = float(minimize_scalar(loss, bounds=(0.05, 20.0), method="bounded").x)

    words, chars, regression = fit(texts, labels)
    coef = np.zeros((len(CLASSES), regression.coef_.shape[1]))
    intercept = np.full(len(CLASSES), -30.0)  # a class absent from the corpus is never predicted
    for row, label in enumerate(regression.classes_):
        coef[label], intercept[label] = regression.coef_[row], regression.intercept_[row]
    return TextModel(
        classes=list(CLASSES), version=version, temperature=round(temperature, 6),
        word_index={gram: int(i) for gram, i in words.vocabulary_.items()},
        char_index={gram: int(i) for gram, i in chars.vocabulary_.items()},
        word_idf=words.idf_, char_idf=chars.idf_, coef=coef.T.copy(), intercept=intercept,
    )  # fmt: skip


def model_train(output_dir: Path, corpus_path: Path = CORPUS_PATH) -> TextModel:
    """Fits the model on the whole corpus and writes it to output_dir (the shipped artifact by default)."""
    examples, content = corpus_load(corpus_path)
    model = model_fit(examples, model_version(content))
    model_save(model, output_dir)
    return model
