"""How the user model does for users who do not write in English (issue i18n30), with the default
encoder (MiniLM, trained on English).

    OMP_NUM_THREADS=1 python -m benchmarks.multilingual_users --json

Nothing is translated: each language has a few short native sentences (below), answers are 1 to 5
of them, and synthetic users follow one of three rules:

- `brief`: prefers the answer with fewer sentences; `thorough`: the one with more (a length rule:
  the `length` feature's job, and the latent part's if the encoder sees length);
- `own_script`: prefers the answer in their language over one in English of the same length
  (no named feature says which script a text is in: only the encoder's vectors can; for `en` both
  answers are English, so 0.5 is expected there);
- `topic`: prefers, of two answers of the same length in their language, the one that mentions the
  museum (what the answer says: only the encoder's vectors can tell).

The population model is PAL trained on the shared persona data (2 groups, English), as the service's
tests train it; each user's model (`UserModel.fit_user`) is fitted on `--shots` comparisons and
scored on `--queries` held-out ones. Prints accuracy per language and rule (mean over users; 0.5 is a
coin), and MiniLM's tokenizer on one sentence per language: word pieces per character and the share
that are [UNK] (a text MiniLM cannot read comes out as [UNK]s, and two such texts embed alike).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

SENTENCES = {
    "en": ["The park is quiet in the morning.", "We can have lunch together.", "The museum opens at ten.",
           "Take an umbrella, it may rain.", "The train leaves at noon.", "Call me when you arrive."],
    "zh": ["早上公园很安静。", "我们可以一起吃午饭。", "博物馆十点开门。", "带把伞，可能会下雨。", "火车中午出发。", "到了给我打电话。"],
    "ja": ["朝の公園は静かです。", "一緒に昼ご飯を食べましょう。", "美術館は十時に開きます。", "傘を持って行ってください。",
           "電車は正午に出ます。", "着いたら電話してください。"],
    "ru": ["Утром в парке тихо.", "Мы можем вместе пообедать.", "Музей открывается в десять.", "Возьми зонт, может пойти дождь.",
           "Поезд уходит в полдень.", "Позвони, когда приедешь."],
    "ar": ["الحديقة هادئة في الصباح.", "يمكننا تناول الغداء معا.", "يفتح المتحف في العاشرة.", "خذ مظلة، قد تمطر.",
           "يغادر القطار عند الظهر.", "اتصل بي عندما تصل."],
    "he": ["הפארק שקט בבוקר.", "אפשר לאכול צהריים יחד.", "המוזיאון נפתח בעשר.", "קח מטריה, אולי ירד גשם.",
           "הרכבת יוצאת בצהריים.", "תתקשר כשתגיע."],
    "hi": ["सुबह पार्क शांत रहता है।", "हम साथ में खाना खा सकते हैं।", "संग्रहालय दस बजे खुलता है।", "छाता ले लो, बारिश हो सकती है।",
           "ट्रेन दोपहर में जाती है।", "पहुँचकर मुझे फ़ोन करना।"],
    "ko": ["아침에는 공원이 조용해요.", "같이 점심 먹어요.", "박물관은 열 시에 열어요.", "우산 가져가세요, 비가 올 수도 있어요.",
           "기차는 정오에 떠나요.", "도착하면 전화하세요."],
}
PROMPTS = {"en": "What shall we do tomorrow?", "zh": "明天做什么？", "ja": "明日は何をしますか？", "ru": "Что будем делать завтра?",
           "ar": "ماذا سنفعل غدا؟", "he": "מה נעשה מחר?", "hi": "कल हम क्या करेंगे?", "ko": "내일 뭐 할까요?"}
UNSPACED = {"zh", "ja"}
RULES = ("brief", "thorough", "own_script", "topic")


def answer(lang: str, idx: list[int]) -> str:
    return ("" if lang in UNSPACED else " ").join(SENTENCES[lang][i] for i in idx)


def comparisons(lang: str, rule: str, n: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """n (prompt, chosen, rejected) of one user following `rule`."""
    out = []
    while len(out) < n:
        if rule == "own_script":
            k = int(rng.integers(1, 4))
            idx = list(rng.choice(6, size=k, replace=False))
            out.append((PROMPTS[lang], answer(lang, idx), answer("en", list(rng.choice(6, size=k, replace=False)))))
            continue
        if rule == "topic":  # sentence 2 is the museum's
            k = int(rng.integers(1, 4))
            others = [i for i in range(6) if i != 2]
            with_it = [2, *rng.choice(others, size=k - 1, replace=False)]
            out.append((PROMPTS[lang], answer(lang, list(rng.permutation(with_it))), answer(lang, list(rng.choice(others, size=k, replace=False)))))
            continue
        a, b = (int(x) for x in rng.choice(np.arange(1, 6), size=2, replace=False))
        short, long = answer(lang, list(rng.choice(6, size=min(a, b), replace=False))), answer(lang, list(rng.choice(6, size=max(a, b), replace=False)))
        out.append((PROMPTS[lang], short, long) if rule == "brief" else (PROMPTS[lang], long, short))
    return out


def train_population(encoder, data_dir: Path):
    """PAL on the shared persona data (2 groups, 8 users, 20 comparisons each), as tests/service/tiny.py trains it."""
    from pluralign.data.persona import PersonaConfig, build_persona
    from pluralign.reward.features import embed_pairs
    from pluralign.reward.pal import PALConfig, PALTrainConfig, train_pal

    protocol = build_persona(PersonaConfig(groups=2, users_per_group=4, comparisons_per_user=20, seed=0), data_dir)
    users = sorted({r.user_id for r in protocol.seen.train})
    train, val = embed_pairs(protocol.seen.train, encoder, users), embed_pairs(protocol.seen.val, encoder, users)
    torch.manual_seed(0)
    config = PALConfig(k=2, input_dim=encoder.dim, latent_dim=16, hidden=32)
    return train_pal(train, val, config, PALTrainConfig(max_epochs=8, batch_size=64)).model


def tokenizer_stats(encoder) -> dict[str, dict[str, float]]:
    tokenizer = encoder.model.tokenizer
    out = {}
    for lang in SENTENCES:
        text = answer(lang, list(range(6)))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out[lang] = {"pieces_per_char": round(len(ids) / len(text), 2), "unk": round(sum(i == tokenizer.unk_token_id for i in ids) / len(ids), 2)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="users per language and rule")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--data", default=os.environ.get("PLURALIGN_SHARED_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data")))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from pluralign.embed.encoders import SentenceEncoder
    from pluralign.user import UserModel

    t0 = time.perf_counter()
    encoder = SentenceEncoder()
    model = train_population(encoder, Path(args.data))
    um = UserModel(model, population="bench")
    rng = np.random.default_rng(0)
    plan = {(lang, rule, u): comparisons(lang, rule, args.shots + args.queries, rng)
            for lang in SENTENCES for rule in RULES for u in range(args.users)}
    texts = sorted({t for rows in plan.values() for row in rows for t in row})
    vectors = dict(zip(texts, encoder.encode(texts), strict=True))
    accuracy: dict[str, dict[str, float]] = {lang: {} for lang in SENTENCES}
    for lang in SENTENCES:
        for rule in RULES:
            scores = []
            for u in range(args.users):
                rows = plan[(lang, rule, u)]
                shots, queries = rows[: args.shots], rows[args.shots :]
                vec = lambda col, rs: np.stack([vectors[r[col]] for r in rs])  # noqa: E731
                logits, state = um.fit_user(vec(0, shots), vec(1, shots), vec(2, shots), [r[1] for r in shots], [r[2] for r in shots],
                                            prior_logits=np.zeros(um.k))
                chosen = um.score(logits, state, um.candidates(vec(0, queries), vec(1, queries), [r[1] for r in queries]))
                rejected = um.score(logits, state, um.candidates(vec(0, queries), vec(2, queries), [r[2] for r in queries]))
                scores.append(float(np.mean(chosen > rejected)))
            accuracy[lang][rule] = round(float(np.mean(scores)), 3)
    result = {"benchmark": "multilingual_users", "users": args.users, "shots": args.shots, "queries": args.queries,
              "accuracy": accuracy, "tokenizer": tokenizer_stats(encoder), "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    print(f"{'':4s} " + " ".join(f"{r:>10s}" for r in RULES) + "  pieces/char  [UNK]")
    for lang in SENTENCES:
        tok = result["tokenizer"][lang]
        print(f"{lang:4s} " + " ".join(f"{accuracy[lang][r]:10.3f}" for r in RULES) + f"  {tok['pieces_per_char']:11.2f}  {tok['unk']:5.0%}")


if __name__ == "__main__":
    main()
