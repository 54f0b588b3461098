"""Writes intent_train.jsonl / intent_dev.jsonl / intent_test.jsonl: utterances for four intents.

Generated from templates and slot values with a fixed seed, so the files are reproducible:
    python examples/data/make_intent_data.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SLOTS = {
    "song": ["Bohemian Rhapsody", "Hey Jude", "Shape of You", "Clair de Lune", "Take Five", "Yesterday",
             "Hotel California", "Bad Guy", "Let It Be", "Blinding Lights", "Imagine", "Wonderwall"],
    "artist": ["Queen", "the Beatles", "Adele", "Miles Davis", "Taylor Swift", "Debussy", "Nina Simone",
               "Coldplay", "Daft Punk", "Billie Eilish"],
    "playlist": ["Road Trip", "Morning Run", "Chill Vibes", "Dinner Party", "Focus", "Sunday Jazz", "Workout Mix"],
    "city": ["Paris", "Tokyo", "Chicago", "Lisbon", "Nairobi", "Seattle", "Berlin", "Mumbai", "Toronto", "Oslo"],
    "when": ["tomorrow", "tonight", "this weekend", "on Friday", "next week", "this afternoon", "right now"],
    "n": ["two", "four", "six", "three", "a party of eight", "five"],
    "time": ["7pm", "8 tonight", "noon", "half past six", "9:30", "lunchtime"],
    "cuisine": ["Italian", "sushi", "Thai", "Mexican", "vegan", "French", "Indian", "steak"],
    "genre": ["jazz", "rock", "classical music", "hip hop", "lo-fi beats", "country", "techno"],
}

TEMPLATES = {
    "add_to_playlist": [
        "Add {song} to my {playlist} playlist",
        "Put {song} by {artist} on {playlist}",
        "Please add this track to {playlist}",
        "Can you include {artist} in my {playlist} list",
        "Save {song} to the {playlist} playlist",
        "Add the new {artist} song to {playlist}",
        "Throw {song} into my {playlist} mix",
        "Append {song} to playlist {playlist}",
    ],
    "book_restaurant": [
        "Book a table for {n} at {time}",
        "Reserve a table at a {cuisine} restaurant for {n} {when}",
        "I need a dinner reservation for {n} at {time}",
        "Table for {n} at {time} please",
        "Find me a {cuisine} place and book it for {n} {when}",
        "Make a restaurant reservation in {city} for {n}",
        "Can you get us a table for {n} at the {cuisine} restaurant {when}",
        "Reserve dinner for {n} people at {time}",
    ],
    "get_weather": [
        "What's the weather in {city} {when}",
        "Will it rain in {city} {when}",
        "How hot will it be {when} in {city}",
        "Is it going to snow in {city} {when}",
        "Weather forecast for {city}",
        "Do I need an umbrella in {city} {when}",
        "What's the temperature in {city} right now",
        "Tell me the forecast for {when}",
    ],
    "play_music": [
        "Play {song}",
        "Play some {genre}",
        "Put on {artist}",
        "I want to listen to {song} by {artist}",
        "Play music by {artist}",
        "Start playing some {genre} for me",
        "Can you play {song} on the speaker",
        "Shuffle songs by {artist}",
    ],
}


def fill(template: str, rng: random.Random) -> str:
    out = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", rng.choice(values), 1)
    return out


def main() -> None:
    rng = random.Random(7)
    rows, seen = [], set()
    while len(rows) < 240:
        intent = rng.choice(sorted(TEMPLATES))
        text = fill(rng.choice(TEMPLATES[intent]), rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"utterance": text, "intent": intent})
    here = Path(__file__).parent
    for name, part in (("intent_train", rows[:120]), ("intent_dev", rows[120:180]), ("intent_test", rows[180:])):
        with open(here / f"{name}.jsonl", "w") as fh:
            for r in part:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
