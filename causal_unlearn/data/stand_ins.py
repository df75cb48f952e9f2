"""Stand-in prompts: each forget prompt with its subject swapped for someone the model never saw.

The `stand_in` objective makes the model answer about a forget subject as the original model
answers about a stranger; these prompts are how it asks the original model about a stranger.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from causal_unlearn.data.rows import Row


def stand_in_prompts(rows: Sequence[Row], replacements: Mapping[str, str]) -> dict[str, str]:
    """Each row's id -> its input with every subject in `replacements` swapped for its stand-in.

    Whole words only ("Ann Teal" is not swapped inside "Ann Teale"); longer subjects first, so a
    full name wins over a first name that is also listed. A row whose input names none of the
    subjects is an error: the original model would see the same prompt, and the stand-in target
    would be the memorized answer.

    Examples:
        >>> row = Row(id="p7qa2", input="What is Ann Teal's phone number?", output="7216253765", task="Task2")
        >>> stand_in_prompts([row], {"Ann Teal": "Mia Holt"})
        {'p7qa2': "What is Mia Holt's phone number?"}
    """
    if not replacements:
        raise ValueError("no subjects to replace: pass {subject: stand-in name, ...}")
    same = [subject for subject, stand_in in replacements.items() if subject == stand_in]
    if same:
        raise ValueError(f"stand-ins must differ from their subjects; {same[:3]} map to themselves")
    subjects = sorted(replacements, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(s) for s in subjects) + r")\b")
    prompts = {row.id: pattern.sub(lambda match: replacements[match.group(1)], row.input) for row in rows}
    unchanged = [row.id for row in rows if prompts[row.id] == row.input]
    if unchanged:
        raise ValueError(
            f"{len(unchanged)} row(s) name none of the {len(replacements)} subjects (first: {unchanged[0]!r}); "
            "add their subjects to the replacements, or leave those rows out of the forget set"
        )
    return prompts
