"""Figures for bench/inbound.py: how fast the shipped classifier is and how right it is on the held-out split.

Throughput is parse + classify of the corpus's raw messages in this one process (one core), with the shipped
model. Accuracy refits the model on the train split in memory (the shipped one has seen every group) and runs the
whole classifier, rules included, on the held-out groups."""

import time

from processing.classifier import CLASSES
from processing.classifier.default import DefaultClassifier
from processing.classifier.training import Example, corpus_load, corpus_split, model_fit
from processing.parsing import email_parse


def throughput_measure(raws: list[bytes], classifier: DefaultClassifier, seconds: float = 3.0) -> tuple[float, float]:
    """(emails per CPU second, emails per wall second), parse + classify, single process. Per core is CPU time:
    on a shared machine the wall figure also counts time the process waited for a core."""
    for raw in raws[:50]:  # warm-up: model loaded, regexes compiled
        classifier.classify(email_parse(raw))
    done, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        for raw in raws:
            classifier.classify(email_parse(raw))
        done += len(raws)
    return done / (time.process_time() - cpu), done / (time.perf_counter() - wall)


def held_out_evaluate(examples: list[Example] | None = None) -> dict:
    """Accuracy, per-class precision/recall and the confusion matrix of the full classifier on held-out groups."""
    if examples is None:
        examples, _ = corpus_load()
    train, held = corpus_split(examples)
    classifier = DefaultClassifier(model_fit(train, "held-out"))
    pairs = [(e.label, classifier.classify(email_parse(e.raw)).classification) for e in held]
    matrix = {truth: dict.fromkeys(CLASSES, 0) for truth in CLASSES}
    for truth, predicted in pairs:
        matrix[truth][predicted] += 1
    per_class = {}
    for name in CLASSES:
        predicted = sum(matrix[t][name] for t in CLASSES)
        actual = sum(matrix[name].values())
        per_class[name] = {
            "precision": matrix[name][name] / predicted if predicted else None,
            "recall": matrix[name][name] / actual if actual else None,
            "support": actual,
        }
    accuracy = sum(t == p for t, p in pairs) / len(pairs)
    return {"accuracy": accuracy, "per_class": per_class, "matrix": matrix, "train": len(train), "held_out": len(held)}


def confusion_text(matrix: dict) -> str:
    """The confusion matrix as a printable table (rows: true class, columns: predicted)."""
    short = {"auto_reply": "auto", "promotion": "promo", "unknown": "unkn", "meeting": "meet", "bounce": "bounc"}
    header = "true\\pred".ljust(11) + "".join(short.get(c, c).rjust(7) for c in CLASSES)
    lines = [header]
    for truth in CLASSES:
        lines.append(truth.ljust(11) + "".join(str(matrix[truth][p]).rjust(7) for p in CLASSES))
    return "\n".join(lines)


def classification_benchmark() -> tuple[list[dict], str]:
    """Rows {"metric", "value", "detail"} for bench/inbound.py's table, and the confusion matrix as text."""
    examples, _ = corpus_load()
    shipped = DefaultClassifier()
    per_core, per_wall = throughput_measure([e.raw for e in examples], shipped)
    figures = held_out_evaluate(examples)
    rows = [
        {"metric": "classification throughput", "value": f"{per_core:,.0f} emails/s per core",
         "detail": f"parse + classify, 1 process, CPU time ({per_wall:,.0f}/s wall clock), "
                   f"{len(examples)} corpus messages, model {shipped.version}"},
        {"metric": "held-out accuracy", "value": f"{figures['accuracy']:.3f}",
         "detail": f"rules + model, trained on {figures['train']}, tested on {figures['held_out']} unseen groups"},
    ]  # fmt: skip
    for name, scores in figures["per_class"].items():
        precision = "-" if scores["precision"] is None else f"{scores['precision']:.2f}"
        recall = "-" if scores["recall"] is None else f"{scores['recall']:.2f}"
        rows.append({"metric": f"{name} precision / recall", "value": f"{precision} / {recall}",
                     "detail": f"{scores['support']} held-out messages"})  # fmt: skip
    return rows, confusion_text(figures["matrix"])
