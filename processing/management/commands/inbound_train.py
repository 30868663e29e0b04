"""Retrains the default classifier's text model from the shipped corpus and writes its artifact (model.json +
model.npz, scored with NumPy at runtime). Prints the held-out accuracy and confusion matrix first: the held-out
groups are fragments whose variants the measuring model never saw. Deterministic: the same corpus and parameters
give byte-identical files and the same version. --rebuild-corpus regenerates corpus.jsonl from fragments.py."""

from pathlib import Path

from django.core.management.base import BaseCommand

from processing.classifier.corpus.build import CORPUS_PATH, corpus_write
from processing.classifier.evaluate import confusion_text, held_out_evaluate
from processing.classifier.model import ARTIFACT_DIR
from processing.classifier.training import corpus_load, model_train


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--output", type=Path, default=ARTIFACT_DIR, help="directory for model.json/model.npz")
        parser.add_argument("--corpus", type=Path, default=CORPUS_PATH, help="JSONL corpus (raw + label + group)")
        parser.add_argument("--rebuild-corpus", action="store_true", help="regenerate the corpus from fragments.py")
        parser.add_argument("--skip-evaluation", action="store_true", help="only fit and write the artifact")

    def handle(self, *args, output: Path, corpus: Path, rebuild_corpus: bool, skip_evaluation: bool, **options) -> None:
        if rebuild_corpus:
            self.stdout.write(f"corpus: {corpus_write(corpus)} messages written to {corpus}")
        if not skip_evaluation:
            examples, _ = corpus_load(corpus)
            figures = held_out_evaluate(examples)
            sizes = f"train {figures['train']}, held out {figures['held_out']}"
            self.stdout.write(f"held-out accuracy {figures['accuracy']:.3f} ({sizes})")
            for name, scores in figures["per_class"].items():
                precision = "-" if scores["precision"] is None else f"{scores['precision']:.2f}"
                recall = "-" if scores["recall"] is None else f"{scores['recall']:.2f}"
                self.stdout.write(f"  {name:<11} precision {precision:>5}  recall {recall:>5}  n={scores['support']}")
            self.stdout.write(confusion_text(figures["matrix"]))
        model = model_train(output, corpus)
        self.stdout.write(self.style.SUCCESS(f"model {model.version} written to {output}"))
