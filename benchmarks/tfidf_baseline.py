"""TF-IDF + logistic regression on exactly the split `zerotune train` uses: the bar a fine-tune must clear.

python -m benchmarks.tfidf_baseline examples/classification.vader-tweets.yaml
"""

from __future__ import annotations

import argparse
import json


def tfidf_baseline(config: str, overrides: list[str] | None = None) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from sweeps.config import load_config
    from sweeps.preflight.data import load_examples
    from sweeps.search.baseline import LOGISTIC, TFIDF
    from sweeps.search.folds import train_val_split

    cfg = load_config(config, overrides)
    examples = load_examples(cfg, min_per_class=2)
    train, val = train_val_split(examples, fraction=cfg.split.validation_fraction, task=cfg.task, seed=cfg.seed)
    texts = list(examples.texts)
    vec = TfidfVectorizer(**TFIDF)  # the sweep's own baseline settings (sweeps.search.baseline)
    x_train = vec.fit_transform([texts[i] for i in train])
    x_val = vec.transform([texts[i] for i in val])
    clf = LogisticRegression(**LOGISTIC).fit(x_train, examples.labels[train])
    pred = clf.predict(x_val)
    return {
        "config": config,
        "n_train": len(train),
        "n_val": len(val),
        "f1_macro": float(f1_score(examples.labels[val], pred, average="macro")),
        "accuracy": float(accuracy_score(examples.labels[val], pred)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(json.dumps(tfidf_baseline(args.config, args.overrides), indent=2))


if __name__ == "__main__":
    main()
