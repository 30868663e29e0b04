"""`manage.py inbound_train` retrains from the shipped corpus into a given directory, prints the held-out figures,
and is deterministic (same corpus: byte-identical files, same version); the shipped model matches the shipped corpus."""

import json
from io import StringIO
from pathlib import Path

from django.core.management import call_command

from processing.classifier import CLASSES
from processing.classifier.corpus.build import CORPUS_PATH, corpus_build
from processing.classifier.default import DefaultClassifier
from processing.classifier.model import ARTIFACT_DIR, model_load, model_version
from processing.parsing import email_parse


def small_corpus(path: Path) -> Path:
    """Four groups per class, two variants each: enough for the held-out split and the calibration folds."""
    rows, groups = [], {}
    for row in corpus_build():
        chosen = groups.setdefault(row["label"], [])
        if row["group"] not in chosen and len(chosen) < 4:
            chosen.append(row["group"])
        if row["group"] in chosen and sum(r["group"] == row["group"] for r in rows) < 2:
            rows.append(row)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_retrain_prints_held_out_figures_and_is_deterministic(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    outputs = []
    for run, skip_evaluation in (("a", False), ("b", True)):
        out = StringIO()
        call_command("inbound_train", output=tmp_path / run, corpus=corpus, skip_evaluation=skip_evaluation, stdout=out)
        outputs.append(out.getvalue())
    assert "held-out accuracy" in outputs[0] and "true\\pred" in outputs[0] and "bounce" in outputs[0]
    for name in ("model.json", "model.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    classifier = DefaultClassifier(model_load(tmp_path / "a"))
    assert classifier.version == model_version(corpus.read_bytes())
    raw = b"From: a@example.org\nSubject: 30% off all shoes\n\nBig sale this weekend, shop now and save 30%."
    assert classifier.classify(email_parse(raw)).classification == "promotion"


def test_the_shipped_model_was_trained_on_the_shipped_corpus() -> None:
    shipped = json.loads((ARTIFACT_DIR / "model.json").read_text(encoding="utf-8"))
    assert shipped["version"] == model_version(CORPUS_PATH.read_bytes())  # else: run manage.py inbound_train
    assert shipped["classes"] == list(CLASSES)


def test_the_shipped_corpus_is_what_its_builder_writes() -> None:
    rows = [json.loads(line) for line in CORPUS_PATH.read_text(encoding="utf-8").splitlines()]
    assert rows == corpus_build()
    assert len(rows) >= 600
    assert {row["label"] for row in rows} == {
        "meeting",
        "promotion",
        "intro",
        "reply",
        "auto_reply",
        "bounce",
        "unknown",
    }
    assert {"en", "de", "fr", "es"} <= {row["lang"] for row in rows}
