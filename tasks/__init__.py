"""The built-in task cards (YAML) and the demo's data. The wheel carries this folder as `localaug.cards.tasks`."""
