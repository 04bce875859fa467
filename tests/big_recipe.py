"""A recipe of some 48 KB (long instructions, many described fields): its prompt and
schema are most of what each request is billed for."""

from __future__ import annotations

from pathlib import Path

FIELDS = 28


def write_big_recipe(path: Path) -> Path:
    """Write the recipe to ``path`` (a ``.toml`` file) and return it."""
    rule = "- Use only what the document says, in plain words, one idea a card.\n"
    instructions = "You make careful cards from one document.\n" + rule * 280
    lines = ['name = "big"', f'instructions = """\n{instructions}"""', "max_cards = 3"]
    for i in range(FIELDS):
        about = f"Field {i}: " + "what the document says of this aspect, briefly. " * 19
        lines += [
            "[[fields]]",
            f'name = "aspect_{i}"',
            'type = "string"',
            f"required = {'true' if i == 0 else 'false'}",
            "max_chars = 60",
            f'description = "{about.strip()}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path
