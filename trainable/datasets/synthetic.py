"""A generated ERC dataset ("synthetic"): offline demos and smoke runs, no files needed.

Deterministic given ``seed`` (and ``size``). It is built so that what DialogueTRM models matters:

Generative rule, per dialogue: 2-3 speakers, 6-16 turns, no speaker talks twice in a row. Each
speaker carries a hidden mood: None, or (emotion, turns left). At each turn the speaker

* with an active mood, reacts (probability ``P_REACT``): the text is an ambiguous phrase shared
  by every emotion ("yeah", "really?", "my sandwich"), the label is the mood's emotion, and the
  mood wears off after 1-3 such reactions. So the label is carried by the speaker's *own earlier
  turn* (the indi-context of eq 1), not by the words of the turn;
* otherwise takes a free turn:
  - a cause (``P_CAUSE``): an explicit sentence of one emotion ("you broke my phone" -> anger),
    labelled with it, which sets the speaker's mood;
  - a spontaneous outburst (``P_SPONTANEOUS``): an ambiguous phrase with a random non-neutral
    label that nothing in the text or context reveals; only the features below carry it;
  - else neutral: a neutral statement, or an ambiguous phrase, labelled neutral.

Audio (16-d) and visual (32-d) vectors are a class prototype plus a per-speaker offset plus unit
Gaussian noise; each alone is a weak, noisy cue, together a better one, so fusion helps.
The vocabulary is about 170 words, so a tiny WordPiece tokenizer learns it at once.
Labels: neutral, joy, sadness, anger, fear. Dialogue ids are ``"<split>/<index>"``.
"""

from __future__ import annotations

import numpy as np

from trainable.data_types import DatasetSplits, Dialogue
from trainable.datasets.common import take

LABELS = ("neutral", "joy", "sadness", "anger", "fear")
AUDIO_DIM, VISUAL_DIM = 16, 32
SIZES = {"train": 600, "dev": 80, "test": 80}
TURNS = (6, 16)
P_REACT, P_CAUSE, P_SPONTANEOUS = 0.85, 0.35, 0.12
AUDIO_SCALE, VISUAL_SCALE, SPEAKER_SCALE = 0.35, 0.22, 0.3
VERSION = 1

NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "henry")
OBJECTS = ("sandwich", "phone", "car", "guitar", "bike", "laptop", "keys", "jacket", "camera")
PLACES = ("in the kitchen", "at the park", "in the basement", "at the office", "on the bus")
PEOPLE = ("my brother", "my sister", "my boss", "the neighbor", "my roommate")
CITIES = ("paris", "boston", "tokyo", "rome")
JOBS = ("bank", "museum", "bakery", "library")
SLOTS = {"obj": OBJECTS, "place": PLACES, "person": PEOPLE, "city": CITIES, "job": JOBS}
# The object slot is shared by every emotion, so "my phone" says nothing about the feeling.
CAUSES = {
    "joy": (
        "i found my {obj} {place}",
        "{person} gave me a new {obj}",
        "we are going to {city} next week",
        "i got the job at the {job}",
    ),
    "sadness": (
        "i lost my {obj} {place}",
        "{person} is moving to {city} for good",
        "i did not get the job at the {job}",
        "nobody came to my party",
    ),
    "anger": (
        "you broke my {obj}",
        "{person} took my {obj} without asking",
        "someone scratched my {obj} {place}",
        "they fired me from the {job}",
    ),
    "fear": (
        "something is moving under my {obj}",
        "there is a stranger {place}",
        "i heard a noise {place}",
        "{person} is following me",
    ),
}
NEUTRAL = (
    "the meeting is at {time}",
    "let us get {food} {place}",
    "did you call {person}",
    "the bus leaves at {time}",
    "i need to buy {food}",
    "can you pass the {obj}",
)
NEUTRAL_SLOTS = {"time": ("noon", "three", "five", "nine"), "food": ("coffee", "pizza", "soup")}
AMBIGUOUS = (
    "yeah",
    "really?",
    "oh",
    "i know",
    "okay",
    "wow",
    "seriously?",
    "right",
    "well",
    "again?",
    "i can not believe it",
    "you know what",
    "no way",
    "of course",
    "my {obj}",
)


def _fill(template: str, rng: np.random.Generator, obj: str | None = None) -> str:
    slots = {**SLOTS, **NEUTRAL_SLOTS}
    values = {name: str(rng.choice(options)) for name, options in slots.items()}
    if obj is not None:
        values["obj"] = obj  # a reaction echoes the object of the speaker's own cause
    return template.format(**values)


def _turns(rng: np.random.Generator, speakers: list[str], length: int):
    """Yield (speaker, text, label) following the rule in the module docstring."""
    mood: dict[str, list | None] = {s: None for s in speakers}  # [label, turns left, object]
    previous = None
    for _ in range(length):
        speaker = str(rng.choice([s for s in speakers if s != previous]))
        previous = speaker
        state = mood[speaker]
        if state is not None and rng.random() < P_REACT:
            label, _, obj = state
            text = _fill(str(rng.choice(AMBIGUOUS)), rng, obj)
            state[1] -= 1
            if state[1] == 0:
                mood[speaker] = None
            yield speaker, text, label
            continue
        draw = rng.random()
        if draw < P_CAUSE:
            label = int(rng.integers(1, len(LABELS)))
            template = str(rng.choice(CAUSES[LABELS[label]]))
            obj = str(rng.choice(OBJECTS))
            mood[speaker] = [label, int(rng.integers(1, 4)), obj]
            yield speaker, _fill(template, rng, obj), label
        elif draw < P_CAUSE + P_SPONTANEOUS:
            yield speaker, _fill(str(rng.choice(AMBIGUOUS)), rng), int(rng.integers(1, len(LABELS)))
        else:
            pool = NEUTRAL if rng.random() < 0.6 else AMBIGUOUS
            yield speaker, _fill(str(rng.choice(pool)), rng), 0


def _dialogue(rng: np.random.Generator, dialogue_id: str, prototypes: dict) -> Dialogue:
    speakers = [str(s) for s in rng.choice(NAMES, size=int(rng.integers(2, 4)), replace=False)]
    length = int(rng.integers(TURNS[0], TURNS[1] + 1))
    names, texts, labels = zip(*_turns(rng, speakers, length), strict=True)
    offsets = {s: rng.normal(0.0, SPEAKER_SCALE, AUDIO_DIM + VISUAL_DIM) for s in speakers}
    y = np.array(labels)
    bias = np.stack([offsets[s] for s in names])
    audio = prototypes["audio"][y] + bias[:, :AUDIO_DIM] + rng.normal(size=(length, AUDIO_DIM))
    visual = prototypes["visual"][y] + bias[:, AUDIO_DIM:] + rng.normal(size=(length, VISUAL_DIM))
    return Dialogue(
        id=dialogue_id,
        utterances=list(texts),
        speakers=list(names),
        labels=[int(v) for v in labels],
        audio=audio.astype(np.float32),
        visual=visual.astype(np.float32),
    )


def load_synthetic(
    *, seed: int = 0, size: float = 1.0, max_dialogues: int | None = None
) -> DatasetSplits:
    """The synthetic dataset: ``size`` scales the default 600/80/80 dialogues per split."""
    root = np.random.SeedSequence([VERSION, seed])
    proto_seq, *split_seqs = root.spawn(1 + len(SIZES))
    proto_rng = np.random.default_rng(proto_seq)
    prototypes = {
        "audio": proto_rng.normal(0.0, AUDIO_SCALE, (len(LABELS), AUDIO_DIM)),
        "visual": proto_rng.normal(0.0, VISUAL_SCALE, (len(LABELS), VISUAL_DIM)),
    }
    splits = {}
    # One independent stream per split: dev and test do not change when train's size does.
    for (split, default), seq in zip(SIZES.items(), split_seqs, strict=True):
        rng = np.random.default_rng(seq)
        count = max(1, round(default * size))
        wanted = take(list(range(count)), max_dialogues)
        splits[split] = [_dialogue(rng, f"{split}/{i}", prototypes) for i in wanted]
    return DatasetSplits(
        name="synthetic",
        task="categorical",
        label_names=list(LABELS),
        **splits,
        audio_dim=AUDIO_DIM,
        visual_dim=VISUAL_DIM,
        source={"generator": "synthetic", "version": VERSION, "seed": seed, "size": size},
    )
