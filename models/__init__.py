"""The built-in model cards (YAML). The wheel carries this folder as `localaug.cards.models`."""
