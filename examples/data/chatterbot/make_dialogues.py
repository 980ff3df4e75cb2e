"""Write dialogues.jsonl: the English chatterbot-corpus conversations as chat rows (data.format chat).

Run from the repository root: `.venv/bin/python examples/data/chatterbot/make_dialogues.py`. Each conversation's
turns alternate user / assistant, starting with the user; a last user turn with no answer is left out (nothing
of it would train), and so are conversations with no answer and repeated ones. `topic` is the corpus file.
"""

from __future__ import annotations

import json
from pathlib import Path


def dialogues(corpus: Path) -> list[dict]:
    import yaml

    rows, seen = [], set()
    for file in sorted(corpus.glob("*.yml")):
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for convo in doc.get("conversations") or []:
            turns = [str(t).strip() for t in convo if t is not None and str(t).strip()]
            turns = turns[: len(turns) // 2 * 2]  # end on an answer
            key = tuple(turns)
            if not turns or key in seen:
                continue
            seen.add(key)
            roles = ["user", "assistant"] * (len(turns) // 2)
            messages = [{"role": r, "content": t} for r, t in zip(roles, turns, strict=True)]
            rows.append({"messages": messages, "topic": file.stem})
    return rows


def main() -> None:
    from trainer.data import resolve_path

    rows = dialogues(Path(resolve_path("pkg:chatterbot_corpus/data/english")))
    out = Path(__file__).with_name("dialogues.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} conversations, {sum(len(r['messages']) // 2 for r in rows)} answers -> {out}")


if __name__ == "__main__":
    main()
