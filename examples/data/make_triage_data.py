"""Writes triage_train.jsonl / triage_dev.jsonl / triage_test.jsonl: customer messages and the team
that handles each (billing, technical, shipping, other). Templates and slot values, fixed seed:
    python examples/data/make_triage_data.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SLOTS = {
    "order": ["1142", "88310", "5521", "A-2093", "77104", "3390"],
    "amount": ["$12.99", "$49", "$120", "$8.50", "$230", "$19.95"],
    "device": ["iPhone", "Android phone", "laptop", "tablet", "smart TV", "Chromebook"],
    "app": ["the app", "the website", "the desktop client", "the dashboard", "the mobile app"],
    "days": ["three days", "a week", "two weeks", "ten days", "a month"],
    "carrier": ["UPS", "FedEx", "DHL", "the post office", "the courier"],
    "thing": ["your office hours", "a job opening", "your privacy policy", "a partnership", "your company history"],
}

TEMPLATES = {
    "billing": [
        "I was charged twice for order {order}, please refund one payment",
        "My invoice shows {amount} but the price was lower, why?",
        "Please cancel my subscription and stop charging my card",
        "I need a refund of {amount} for order {order}",
        "The payment of {amount} failed but money left my account",
        "Can I get a copy of my last invoice for {amount}?",
        "You billed me {amount} after I cancelled my plan",
        "How do I change the credit card on my account?",
    ],
    "technical": [
        "{app} crashes every time I log in on my {device}",
        "I can't reset my password, the link in the email does not work",
        "Error 500 when I open {app} on my {device}",
        "The sync between my {device} and {app} stopped working",
        "{app} is very slow and keeps freezing on my {device}",
        "I get a blank screen after the update on my {device}",
        "Two-factor login codes never arrive on my {device}",
        "Uploads fail with a timeout in {app}",
    ],
    "shipping": [
        "My parcel for order {order} has not arrived after {days}",
        "Tracking for order {order} has not moved in {days}",
        "{carrier} says my package was delivered but I never got it",
        "Can you ship order {order} to a different address?",
        "The box for order {order} arrived damaged",
        "When will order {order} be delivered?",
        "I received the wrong item in order {order}",
        "{carrier} lost my package, order {order}",
    ],
    "other": [
        "Can you tell me about {thing}?",
        "I want to give feedback: your support team was great",
        "Do you have a store in my city?",
        "I'd like to know more about {thing}",
        "Who should I contact about {thing}?",
        "Just wanted to say thanks for the quick help last week",
        "Are you open on public holidays?",
        "Is there a student discount program?",
    ],
}


def fill(template: str, rng: random.Random) -> str:
    out = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", rng.choice(values), 1)
    return out[0].upper() + out[1:]


def main() -> None:
    rng = random.Random(11)
    rows, seen = [], set()
    while len(rows) < 200:
        team = rng.choice(sorted(TEMPLATES))
        text = fill(rng.choice(TEMPLATES[team]), rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"message": text, "team": team})
    here = Path(__file__).parent
    for name, part in (("triage_train", rows[:100]), ("triage_dev", rows[100:150]), ("triage_test", rows[150:])):
        with open(here / f"{name}.jsonl", "w") as fh:
            for r in part:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
